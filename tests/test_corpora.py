"""Several training corpora (data.train_corpora): shares of each epoch, source tags, subword sampling."""

import numpy as np
import pytest
from conftest import assert_clean_error, run_cli, tiny_config, write_reverse_corpus

from transformer_mt.config import config_from_dict
from transformer_mt.data.batches import collate, read_parallel
from transformer_mt.data.mixing import shares
from transformer_mt.decoding.translator import encode_sentences
from transformer_mt.errors import TransformerMTError
from transformer_mt.training.trainer import Trainer


def mixed_config(data, corpora, tokenizer=None, data_keys=None, **training):
    raw = tiny_config(data, **training).to_dict()
    raw["data"].update(train_corpora=corpora, **(data_keys or {}))
    if tokenizer:
        raw["tokenizer"].update(tokenizer)
    return config_from_dict(raw)


@pytest.fixture(scope="module")
def two_corpora(tmp_path_factory):
    """A real corpus of 300 pairs and a 'synthetic' one of 100 (another seed), as train / bt prefixes."""
    root = tmp_path_factory.mktemp("corpora")
    data = write_reverse_corpus(root / "data", n_train=300, n_valid=10, n_test=5)
    other = write_reverse_corpus(root / "other", n_train=100, n_valid=1, n_test=1, seed=5)
    for lang in ("src", "tgt"):
        (data / f"bt.{lang}").write_bytes((other / f"train.{lang}").read_bytes())
    return root, data


def prepared(config, run_dir) -> Trainer:
    trainer = Trainer(config, run_dir, prepare_only=True, show_progress=False)
    trainer.close()
    return trainer


def test_shares_add_up_and_follow_the_weights():
    counts = shares([300, 100, 7], [1.0, 3.0, 0.5])
    assert counts.sum() == 407
    np.testing.assert_allclose(counts / 407, np.array([1.0, 3.0, 0.5]) / 4.5, atol=1 / 407)


def test_weights_give_their_share_of_an_epoch_and_the_tag_reaches_its_corpus_only(two_corpora, tmp_path):
    _, data = two_corpora
    corpora = [{"prefix": "train", "weight": 1.0}, {"prefix": "bt", "weight": 3.0, "tag": "<BT>"}]
    trainer = prepared(mixed_config(data, corpora), tmp_path / "run")
    mix = trainer.train_mix
    tag = trainer.src_tok.piece_to_id(["<BT>"])[0]
    assert tag not in (0, 1, 2, 3)
    for epoch in (0, 1):
        batches = mix.make_batches(400, seed=1, epoch=epoch)
        drawn = np.concatenate(batches)
        which = mix.corpus_of(drawn)
        # 400 pairs an epoch: 1/4 of them from the real corpus, 3/4 from the 100 synthetic pairs (each 3 times).
        assert len(drawn) == 400
        assert abs(np.mean(which == 1) - 0.75) < 0.01
        assert np.bincount(drawn[which == 1] - 300).tolist() == [3] * 100
        assert len(set(drawn[which == 0].tolist())) == 100  # a random quarter of the real pairs
        for indices in batches[:10]:
            batch = mix.collate(indices)
            rows = mix.corpus_of(np.asarray(indices)) == 1
            sources = batch.src_tokens.numpy()
            assert (sources[rows, 0] == tag).all()
            assert not (sources[~rows] == tag).any()
            assert not (batch.tgt_input.numpy() == tag).any()
    # A different epoch draws different real pairs (same seed and epoch: the same ones, see test_resume).
    first, second = (np.sort(np.concatenate(mix.make_batches(400, 1, e))) for e in (0, 1))
    assert not np.array_equal(first, second)


def test_a_given_tokenizer_without_the_tag_is_refused(two_corpora, tmp_path):
    _, data = two_corpora
    run = prepared(tiny_config(data), tmp_path / "plain")  # a word model of this data, without <BT>
    config = tmp_path / "config.yaml"
    raw = mixed_config(data, [{"prefix": "train"}, {"prefix": "bt", "tag": "<BT>"}]).to_dict()
    raw["tokenizer"]["model"] = str(run.src_tok.model_path)
    import yaml

    config.write_text(yaml.safe_dump(raw), encoding="utf-8")
    result = run_cli("train", "--config", config, "--output-dir", tmp_path / "run")
    assert_clean_error(result, "<BT>", "tokenizer.model", "--user_defined_symbols=<BT>")


def test_subword_sampling_varies_by_seed_and_leaves_validation_and_decoding_deterministic(two_corpora, tmp_path):
    _, data = two_corpora
    bpe = {"model_type": "bpe", "vocab_size": 60}
    plain = prepared(mixed_config(data, [], tokenizer=bpe), tmp_path / "plain")
    sampled_cfg = mixed_config(data, [], tokenizer=bpe, data_keys={"subword_alpha": 0.3, "unpunctuated_copies": 0.0})
    trainer = Trainer(sampled_cfg, tmp_path / "sampled", show_progress=False)
    try:
        mix = trainer.train_mix
        valid_src, _ = read_parallel(data / "valid.src", data / "valid.tgt")
        deterministic = [np.asarray(ids) for ids in trainer.src_tok.encode(valid_src)]
        before = trainer.validation_loss()
        batch = mix.make_batches(400, 1, 0)[0]
        first, again, other = (mix.collate(batch, seeds=seeds).src_tokens for seeds in ((1, 2), (1, 2), (3, 4)))
        assert first.equal(again) and not first.equal(other)
        # The deterministic ids of the cache are those of the run without sampling.
        assert collate(mix.corpora[0].data, batch).src_tokens.equal(collate(plain.train_data, batch).src_tokens)
        # Sampling touched neither the validation data nor how sentences are encoded for translation.
        assert trainer.validation_loss() == before
        valid = trainer.valid_data
        assert all(np.array_equal(valid.src(i), deterministic[i]) for i in range(len(valid)))
        assert encode_sentences(valid_src, trainer.src_tok, sampled_cfg) == [d.tolist() for d in deterministic]
        first_validation = trainer.validate()
        mix.collate(batch, seeds=(5, 6))
        second_validation = trainer.validate()
        assert trainer.last_validation_examples and all(
            first_validation[key] == second_validation[key] for key in ("loss", "bleu", "chrf"))
    finally:
        trainer.close()


def test_sampling_reads_the_text_the_cache_encoded(tmp_path):
    """CRLF lines, a byte order mark, a dropped pair and copies without final punctuation: the text index
    still finds each pair's own text."""
    root = tmp_path / "data"
    write_reverse_corpus(root, n_train=50, n_valid=5, n_test=5)
    src = (root / "train.src").read_text().splitlines()
    tgt = (root / "train.tgt").read_text().splitlines()
    src[3], tgt[3] = "", ""  # dropped
    src = [line + " ." for line in src]
    (root / "train.src").write_bytes(("\ufeff" + "\r\n".join(src) + "\r\n").encode())
    (root / "train.tgt").write_text("\n".join(tgt), encoding="utf-8")  # no final newline
    config = mixed_config(root, [], tokenizer={"model_type": "bpe", "vocab_size": 40},
                          data_keys={"subword_alpha": 0.1, "unpunctuated_copies": 0.5})
    trainer = prepared(config, tmp_path / "run")
    corpus = trainer.train_mix.corpora[0].data
    sources, targets = trainer.train_mix.texts[0].pairs(np.arange(len(corpus)))
    assert len(corpus) > 49  # copies were added
    for i, (s, t) in enumerate(zip(sources, targets)):
        assert trainer.src_tok.encode([s])[0] == corpus.src(i).tolist()
        assert trainer.tgt_tok.encode([t])[0] == corpus.tgt(i).tolist()


def test_corpus_mistakes_are_named(two_corpora):
    _, data = two_corpora
    with pytest.raises(TransformerMTError, match=r"data.train_corpora\[1\].weight' must be > 0"):
        mixed_config(data, [{"prefix": "train"}, {"prefix": "bt", "weight": 0}])
    with pytest.raises(TransformerMTError, match=r"data.train_corpora\[0\]' needs either 'prefix'"):
        mixed_config(data, [{"weight": 2}])
    with pytest.raises(TransformerMTError, match="subword_alpha' needs a bpe or unigram"):
        mixed_config(data, [], data_keys={"subword_alpha": 0.1})
