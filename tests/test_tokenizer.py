"""SentencePiece training, round trips, fixed special ids, reuse."""

from conftest import write_reverse_corpus

from transformer_mt.config import TokenizerConfig
from transformer_mt.data.tokenizer import BOS_ID, EOS_ID, PAD_ID, UNK_ID, build_tokenizers, load_tokenizers


def test_train_round_trip_special_ids_and_reuse(tmp_path):
    data = write_reverse_corpus(tmp_path / "data", n_train=500)
    run = tmp_path / "run"
    run.mkdir()
    cfg = TokenizerConfig(vocab_size=40, model_type="bpe")
    src_tok, tgt_tok = build_tokenizers(run, cfg, data / "train.src", data / "train.tgt")
    assert src_tok is tgt_tok and (run / "spm.model").exists()
    sp = src_tok.sp
    assert (sp.pad_id(), sp.unk_id(), sp.bos_id(), sp.eos_id()) == (PAD_ID, UNK_ID, BOS_ID, EOS_ID) == (0, 1, 2, 3)
    assert len(src_tok) == 40
    sentences = ["ba ke mu", "po di ga ko", "be"]
    ids = src_tok.encode(sentences)
    assert all(min(seq) > EOS_ID for seq in ids)  # no special ids inside text
    assert src_tok.decode(ids) == sentences

    # Training again reuses the stored model instead of retraining.
    mtime = (run / "spm.model").stat().st_mtime_ns
    again, _ = build_tokenizers(run, cfg, data / "train.src", data / "train.tgt")
    assert (run / "spm.model").stat().st_mtime_ns == mtime
    assert again.encode(sentences) == ids
    loaded, _ = load_tokenizers(run, joint=True)
    assert loaded.encode(sentences) == ids


def test_separate_models_per_language(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.src").write_text("aaa bbb ccc\n" * 50 + "abc cab\n" * 50, encoding="utf-8")
    (data / "train.tgt").write_text("xyz zzy\n" * 50 + "yyx xx\n" * 50, encoding="utf-8")
    run = tmp_path / "run"
    run.mkdir()
    src_tok, tgt_tok = build_tokenizers(run, TokenizerConfig(joint=False, vocab_size=12, model_type="char"),
                                        data / "train.src", data / "train.tgt")
    assert (run / "spm.src.model").exists() and (run / "spm.tgt.model").exists()
    assert src_tok.decode(src_tok.encode(["abc"])) == ["abc"]
    assert tgt_tok.decode(tgt_tok.encode(["zyx"])) == ["zyx"]
    assert src_tok.encode(["x"])[0] == [UNK_ID] or UNK_ID in src_tok.encode(["x"])[0]


def test_chinese_text_round_trips(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    zh = ["我爱学习", "我们学习中文", "他爱我们", "学习很好", "中文很难"] * 40
    (data / "train.zh").write_text("\n".join(zh) + "\n", encoding="utf-8")
    (data / "train.en").write_text("\n".join(["i like it"] * len(zh)) + "\n", encoding="utf-8")
    run = tmp_path / "run"
    run.mkdir()
    tok, _ = build_tokenizers(run, TokenizerConfig(vocab_size=24, model_type="unigram"),
                              data / "train.zh", data / "train.en")
    assert tok.decode(tok.encode(["我爱学习"])) == ["我爱学习"]


def test_training_samples_at_most_input_sentence_size_sentences_and_says_so(tmp_path, caplog):
    data = write_reverse_corpus(tmp_path / "data", n_train=300)
    for size, said in ((200, "a sample of 200 of its 600 sentences"), (10_000, "all 600 sentences")):
        run = tmp_path / f"run{size}"
        run.mkdir()
        caplog.clear()
        with caplog.at_level("INFO"):
            build_tokenizers(run, TokenizerConfig(vocab_size=40, input_sentence_size=size), data / "train.src",
                             data / "train.tgt")
        assert f"learnt from {said} (tokenizer.input_sentence_size={size})" in caplog.text


def _tokenizer_bytes_in_a_new_process(data, run_dir, input_sentence_size: int) -> bytes:
    """SentencePiece's own sampling differed between processes (not within one), so each run is its own process;
    the run directories differ, as the model once recorded its paths."""
    import subprocess
    import sys

    code = ("import sys; from pathlib import Path; from transformer_mt.config import TokenizerConfig; "
            "from transformer_mt.data.tokenizer import build_tokenizers; "
            "build_tokenizers(Path(sys.argv[1]), TokenizerConfig(model_type='unigram', vocab_size=40, "
            "input_sentence_size=int(sys.argv[4])), Path(sys.argv[2]), Path(sys.argv[3]))")
    run_dir.mkdir()
    subprocess.run([sys.executable, "-c", code, str(run_dir), str(data / "train.src"), str(data / "train.tgt"),
                    str(input_sentence_size)], check=True, timeout=300, capture_output=True)
    return (run_dir / "spm.model").read_bytes()


def test_same_config_and_data_learn_the_same_tokenizer_bytes(tmp_path):
    data = write_reverse_corpus(tmp_path / "data", n_train=2000, n_valid=5, n_test=5)
    for size in (500, 0):  # a sample of the 4000 lines, and all of them
        first = _tokenizer_bytes_in_a_new_process(data, tmp_path / f"a{size}", size)
        assert first == _tokenizer_bytes_in_a_new_process(data, tmp_path / f"b{size}", size)
