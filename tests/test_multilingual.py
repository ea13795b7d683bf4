"""One model for several directions (data.train_corpora with src_lang / tgt_lang): every source starts with its
target-language token, the directions share each epoch by weight (or temperature), each is validated on its own
set, and translate / evaluate / the server pick the direction by its target language."""

from __future__ import annotations

import json
import math
import random
import re

import numpy as np
import pytest
import yaml
from conftest import WORDS, assert_clean_error, run_cli, tiny_config, write_reverse_corpus
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from transformer_mt import Translator, load_config, train
from transformer_mt.config import config_from_dict
from transformer_mt.data.batches import collate
from transformer_mt.data.mixing import load_mix, shares
from transformer_mt.decoding.translator import encode_sentences
from transformer_mt.errors import TransformerMTError
from transformer_mt.training.trainer import Trainer

LANGUAGES = ("aa", "bb", "cc", "dd")


def rendering(language: str, words: list[str]) -> list[str]:
    """The same sentence in each invented language: a different deterministic transformation of its words, so
    that only the target-language token tells the model which one to produce."""
    if language == "aa":
        return words
    if language == "bb":
        return list(reversed(words))
    if language == "cc":
        return [word.upper() for word in words]
    return words[1:] + words[:1]  # dd: rotated


def write_parallel(root, n_train: int = 120, n_valid: int = 6, n_test: int = 6, seed: int = 0):
    """train/valid/test files in every language of LANGUAGES, line i of each the same sentence."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("valid", n_valid), ("test", n_test)):
        sentences = [[rng.choice(WORDS) for _ in range(rng.randint(3, 6))] for _ in range(n)]
        for language in LANGUAGES:
            (root / f"{split}.{language}").write_text(
                "".join(" ".join(rendering(language, s)) + "\n" for s in sentences), encoding="utf-8")
    return root


def multilingual_config(root, directions, tokenizer=None, data_keys=None, **training):
    raw = tiny_config(root, **training).to_dict()
    raw["data"]["train_corpora"] = [{"prefix": "train", "src_lang": s, "tgt_lang": t} for s, t in directions]
    raw["data"]["src_lang"], raw["data"]["tgt_lang"] = directions[0]  # what a run of one direction reads
    raw["data"].update(data_keys or {})
    raw["tokenizer"].update({"vocab_size": 64, **(tokenizer or {})})
    return config_from_dict(raw)


ALL_DIRECTIONS = [(s, t) for s in LANGUAGES for t in LANGUAGES if s != t]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_parallel(tmp_path_factory.mktemp("multilingual") / "data")


@pytest.fixture(scope="module")
def tokenizer(corpus, tmp_path_factory):
    """The joint tokenizer of a run over every direction (it has the token of each language, and the tag <BT>)."""
    raw = multilingual_config(corpus, ALL_DIRECTIONS).to_dict()
    raw["data"]["train_corpora"][0]["tag"] = "<BT>"
    trainer = Trainer(config_from_dict(raw), tmp_path_factory.mktemp("tok") / "run", prepare_only=True,
                      show_progress=False)
    trainer.close()
    return trainer.src_tok


@pytest.fixture(scope="module")
def trained(corpus, tmp_path_factory):
    """A run trained for a few updates on three directions (aa -> bb, aa -> cc, bb -> aa)."""
    run = tmp_path_factory.mktemp("trained") / "run"
    config = multilingual_config(corpus, [("aa", "bb"), ("aa", "cc"), ("bb", "aa")], max_steps=4, validate_every=2)
    summary = train(config, run, show_progress=False)
    return run, config, summary


directions_lists = st.lists(st.sampled_from(ALL_DIRECTIONS), min_size=1, max_size=6, unique=True)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(directions=directions_lists, tagged=st.integers(min_value=-1, max_value=5))
def test_every_source_starts_with_its_target_token_and_decoding_encodes_it_the_same_way(corpus, tokenizer,
                                                                                         directions, tagged):
    raw = multilingual_config(corpus, directions).to_dict()
    if 0 <= tagged < len(directions):  # a tag stays a tag, after the target-language token
        raw["data"]["train_corpora"][tagged]["tag"] = "<BT>"
    config = config_from_dict(raw)
    data = config.data
    multilingual = len(directions) > 1
    assert data.directions() == directions and data.multilingual() == multilingual
    assert data.language_tokens() == ([f">>{t}<<" for t in dict.fromkeys(t for _, t in directions)]
                                      if multilingual else [])
    mix = load_mix(data.training_files(), tokenizer, tokenizer, data, seed=1, cache_dir=None)
    for c, ((source, target), corpus_config) in enumerate(zip(directions, data.train_corpora)):
        texts = (corpus / f"train.{source}").read_text(encoding="utf-8").splitlines()
        token = tokenizer.piece_to_id([f">>{target}<<"])[0]
        tag = [tokenizer.piece_to_id(["<BT>"])[0]] if corpus_config.tag else []
        rows = np.arange(mix.starts[c], mix.starts[c + 1])
        sources = mix.collate(rows).src_tokens.numpy()
        decoded = encode_sentences(texts, tokenizer, config, target if multilingual else None)
        for row, text, for_decoding in zip(sources, texts, decoded):
            ids = row[row != 0].tolist()
            plain = tokenizer.encode([text])[0]
            if multilingual:
                assert ids == [token] + tag + plain
                assert for_decoding == [token] + plain  # translate's encoding is training's (tags aside)
            else:  # one direction: exactly what it was before multilingual training existed
                assert ids == tag + plain and for_decoding == plain
    # Targets never carry a token.
    assert not np.isin(mix.collate(np.arange(len(mix))).tgt_input.numpy(),
                       tokenizer.piece_to_id([f">>{lang}<<" for lang in LANGUAGES])).any()


@settings(max_examples=200, deadline=None)
@given(sizes=st.lists(st.integers(1, 10_000), min_size=1, max_size=6).flatmap(
           lambda sizes: st.tuples(st.just(sizes), st.lists(st.floats(0.1, 10), min_size=len(sizes),
                                                            max_size=len(sizes)))),
       temperature=st.one_of(st.just(0.0), st.floats(0.2, 100)))
def test_shares_follow_weight_times_size_to_one_over_the_temperature(sizes, temperature):
    sizes, weights = sizes
    counts = shares(sizes, weights, temperature)
    total = sum(sizes)
    assert counts.sum() == total and (counts >= 0).all()
    wanted = np.array([w * (s ** (1 / temperature) if temperature else 1.0) for s, w in zip(sizes, weights)])
    np.testing.assert_allclose(counts, wanted / wanted.sum() * total, atol=1.0)


@settings(max_examples=200, deadline=None)
@given(sizes=st.lists(st.integers(1, 10_000), min_size=1, max_size=6),
       scale=st.sampled_from([1e-300, 1e-100, 1.0, 1e100, 1e308]),
       temperature=st.sampled_from([0.0, 1e-310, 1e-300, 1e-3, 1.0, 1e300]))
def test_shares_hold_for_any_representable_weight_and_temperature(sizes, scale, temperature):
    """Equal weights of any size give the same shares as weight 1 (weights of 1e308 overflowed their sum, and each
    corpus got one pair an epoch), and a temperature of 1e-310 gives all to the largest corpora (it was NaN, then a
    traceback deep in training)."""
    counts = shares(sizes, [scale] * len(sizes), temperature)
    assert counts.sum() == sum(sizes) and (counts >= 0).all()
    if temperature == 0.0:
        np.testing.assert_array_equal(counts, shares(sizes, [1.0] * len(sizes)))
    elif temperature <= 1e-300 and len(set(sizes)) == len(sizes):
        assert counts[int(np.argmax(sizes))] >= sum(sizes) - len(sizes)  # the largest takes (nearly) all


def test_temperature_draws_small_directions_more_often(tmp_path):
    root = write_parallel(tmp_path / "data", n_train=200)
    small = tmp_path / "small"
    small.mkdir()
    for lang in ("aa", "cc"):  # aa -> cc has 20 pairs, aa -> bb 200
        lines = (root / f"train.{lang}").read_text().splitlines()[:20]
        (small / f"train.{lang}").write_text("".join(line + "\n" for line in lines))
    counts = {}
    for temperature in (0.0, 1.0, 1000.0):
        raw = multilingual_config(root, [("aa", "bb")], data_keys={"sampling_temperature": temperature}).to_dict()
        raw["data"]["train_corpora"].append({"src": str(small / "train.aa"), "tgt": str(small / "train.cc"),
                                             "src_lang": "aa", "tgt_lang": "cc"})
        trainer = Trainer(config_from_dict(raw), tmp_path / f"run{temperature}", prepare_only=True,
                          show_progress=False)
        trainer.close()
        mix = trainer.train_mix
        drawn = mix.corpus_of(np.concatenate(mix.make_batches(400, seed=1, epoch=0)))
        counts[temperature] = np.bincount(drawn, minlength=2).tolist()
    assert counts[0.0] == [110, 110]  # the weights alone: equal shares of the 220 pairs of an epoch
    assert counts[1.0] == [200, 20]  # in proportion to size
    assert abs(counts[1000.0][0] - 110) <= 1  # almost even


def test_validation_reports_each_direction_and_their_mean_picks_the_best(trained):
    run, config, summary = trained
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    valid = [r for r in records if r["type"] == "valid"]
    assert len(valid) == 2
    for record in valid:
        assert list(record["directions"]) == ["aa-bb", "aa-cc", "bb-aa"]
        for key in ("loss", "bleu", "chrf"):
            values = [d[key] for d in record["directions"].values()]
            assert math.isclose(record[key], sum(values) / 3)
        assert record["directions"]["aa-cc"]["loss"] != record["directions"]["aa-bb"]["loss"]
    assert summary["best_bleu"] == max(r["bleu"] for r in valid)
    log = (run / "train.log").read_text()
    assert "aa-bb loss" in log and "bb-aa loss" in log and "multilingual: 3 directions" in log
    # The run directory records its directions (config.yaml), which translating and serving read.
    assert load_config(run / "config.yaml", environment=False).data.directions() == [("aa", "bb"), ("aa", "cc"),
                                                                                     ("bb", "aa")]


def test_tensorboard_draws_each_direction(trained):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run, _, _ = trained
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert {"valid/bleu", "valid/aa-bb/bleu", "valid/bb-aa/loss"} <= set(tags)


def test_a_missing_or_unknown_target_language_is_named_with_the_choices(trained, tmp_path):
    run, _, _ = trained
    translator = Translator.from_run(run, device="cpu")
    with pytest.raises(TransformerMTError, match="translates into 3 languages: give the target language.*bb, cc, aa"):
        translator.translate(["ba ke"])
    with pytest.raises(TransformerMTError, match="'dd' is not one of this model's 3: bb, cc, aa"):
        translator.translate(["ba ke"], target_language="dd")
    assert translator.translate([""], target_language="cc") == [""]
    assert_clean_error(run_cli("translate", "--model", run, "ba ke"), "--target-language", "bb, cc, aa")
    assert_clean_error(run_cli("translate", "--model", run, "--target-language", "xx", "ba ke"), "'xx'",
                       "bb, cc, aa")
    done = run_cli("translate", "--model", run, "--target-language", "cc", "--beam-size", "1", "ba ke mo")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == translator.translate(["ba ke mo"], beam_size=1, target_language="cc")[0]


def test_evaluate_picks_the_split_files_of_the_direction(trained, corpus):
    run, _, _ = trained
    # Two directions come from aa: the target picks one; into aa there is one (from bb).
    for target, source in (("bb", "aa"), ("aa", "bb")):
        scored = run_cli("evaluate", "--model", run, "--split", "test", "--target-language", target, "--json",
                         "--beam-size", "1", "--output", corpus.parent / f"hyp.{target}")
        assert scored.returncode == 0, scored.stderr
        translator = Translator.from_run(run, device="cpu")
        sources = (corpus / f"test.{source}").read_text().splitlines()
        expected = translator.translate_text(sources, beam_size=1, target_language=target)
        assert (corpus.parent / f"hyp.{target}").read_text().splitlines() == expected
    assert_clean_error(run_cli("evaluate", "--model", run, "--split", "test"), "aa -> bb, aa -> cc, bb -> aa",
                       "--target-language")
    assert_clean_error(run_cli("evaluate", "--model", run, "--split", "test", "--target-language", "bb",
                               "--source-language", "cc"), "--source-language 'cc' matches none of them")
    assert_clean_error(run_cli("evaluate", "--model", run, "--split", "test", "--target-language", "aa",
                               "--source-language", "aa"), "--source-language aa with --target-language aa matches none")


def test_a_server_of_one_multilingual_run_lists_and_translates_its_directions(trained, tmp_path):
    pytest.importorskip("fastapi")
    from conftest import live_app

    from transformer_mt.serving.registry import ModelRegistry, describe_folder, model_folders
    from transformer_mt.serving.server import create_app

    run, _, _ = trained
    models_dir = tmp_path / "models"
    models_dir.mkdir()
    (models_dir / "multi").symlink_to(run)
    models = [describe_folder(folder) for folder in model_folders(models_dir)]
    registry = ModelRegistry(models, lambda model: Translator.from_run(model.path, device="cpu"), pivot=False)
    translator = Translator.from_run(run, device="cpu")
    # serve --models-dir with the run in it, and serve --model RUN: the same pairs.
    for app in (create_app(registry, max_wait_ms=1), create_app(translator, max_wait_ms=1)):
        with live_app(app) as http:
            languages = {entry["code"]: entry["targets"] for entry in http.get("/languages").json()}
            assert languages == {"aa": ["bb", "cc"], "bb": ["aa"], "cc": []}
            for source, target in (("aa", "bb"), ("aa", "cc"), ("bb", "aa")):
                answer = http.post("/translate", json={"q": "ba ke mo", "source": source, "target": target})
                assert answer.status_code == 200, answer.text
                assert answer.json()["translatedText"] == translator.translate(["ba ke mo"],
                                                                               target_language=target)[0]
            refused = http.post("/translate", json={"q": "ba ke mo", "source": "bb", "target": "cc"})
            assert refused.status_code == 400 and "aa -> bb" in refused.json()["error"]


def test_one_direction_stays_as_it_was(tmp_path):
    """A config of one direction (with or without languages on its corpora) has no tokens: the same symbols, files,
    encoded ids and validation record as before."""
    data = write_reverse_corpus(tmp_path / "data", n_train=100, n_valid=5, n_test=5)
    plain = tiny_config(data)
    raw = plain.to_dict()
    raw["data"]["train_corpora"] = [{"prefix": "train", "src_lang": "src", "tgt_lang": "tgt"}]
    same_direction = config_from_dict(raw)
    for config in (plain, same_direction):
        assert not config.data.multilingual() and config.data.symbols() == [] and config.data.language_tokens() == []
        assert [f.language_token for f in config.data.training_files()] == [""]
    trainer = Trainer(plain, tmp_path / "run", show_progress=False)
    try:
        texts = (data / "train.src").read_text().splitlines()
        expected = trainer.src_tok.encode(texts)
        corpus = trainer.train_data
        assert [corpus.src(i).tolist() for i in range(len(corpus))] == expected
        assert collate(corpus, np.arange(3)).src_tokens[:, 0].tolist() == [ids[0] for ids in expected[:3]]
        assert encode_sentences(texts, trainer.src_tok, plain) == expected
        # --target-language naming the one target is accepted, another refused.
        assert encode_sentences(texts, trainer.src_tok, plain, "tgt") == expected
        with pytest.raises(TransformerMTError, match="translates into one language \\(tgt\\)"):
            encode_sentences(texts, trainer.src_tok, plain, "fr")
        assert "directions" not in trainer.validate()
    finally:
        trainer.close()


@pytest.mark.parametrize("corpora, data_keys, message", [
    ([{"prefix": "train", "src_lang": "aa", "tgt_lang": "aa"}], {}, "translates 'aa' into itself"),
    ([{"prefix": "train", "src_lang": "a a", "tgt_lang": "bb"}], {}, "src_lang' 'a a' is not a language code"),
    ([{"prefix": "train", "src_lang": "aa", "tgt_lang": ">>bb<<"}], {}, "is not a language code"),
    ([{"prefix": "train", "src_lang": "aa", "tgt_lang": "bb", "tag": ">>cc<<"}], {}, "form of a target-language"),
    ([{"prefix": "train", "src_lang": "aa", "tgt_lang": "bb", "valid_prefix": "valid"},
      {"prefix": "train", "src_lang": "aa", "tgt_lang": "bb", "valid_prefix": "test"}], {},
     "corpora of aa -> bb name different 'valid_prefix'"),
    ([], {"sampling_temperature": 2.0}, "'data.sampling_temperature' shares an epoch among 'data.train_corpora'"),
    ([{"prefix": "train"}], {"sampling_temperature": -1.0}, "'data.sampling_temperature' must be >= 0"),
])
def test_direction_mistakes_are_named(corpus, corpora, data_keys, message):
    raw = tiny_config(corpus).to_dict()
    raw["data"].update(train_corpora=corpora, **data_keys)
    with pytest.raises(TransformerMTError, match=message.replace("(", "\\(").replace(">", ">")):
        config_from_dict(raw)


def test_imported_vocabularies_and_missing_validation_files_are_refused(corpus, tmp_path):
    raw = multilingual_config(corpus, [("aa", "bb"), ("bb", "aa")]).to_dict()
    raw["tokenizer"].update(joint=False, vocabulary="shared")
    raw["model"]["share_embeddings"] = True
    with pytest.raises(TransformerMTError, match="target-language tokens"):
        config_from_dict(raw)
    raw = multilingual_config(corpus, [("aa", "bb"), ("bb", "aa")]).to_dict()
    raw["data"]["train_corpora"][1]["valid_prefix"] = "elsewhere"
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(raw), encoding="utf-8")
    result = run_cli("train", "--config", config, "--output-dir", tmp_path / "run")
    assert_clean_error(result, "elsewhere.bb", "valid set of bb -> aa", "valid_prefix")


def test_the_multilingual_recipe_trains_a_few_updates_with_a_tiny_model(tmp_path):
    """configs/multi30k_multilingual.yaml on generated four-way parallel data shaped like Multi30k's."""
    generated = write_parallel(tmp_path / "generated", n_train=60, n_valid=4, n_test=4)
    data = tmp_path / "multi30k"
    data.mkdir()
    for ours, language in zip(LANGUAGES, ("de", "en", "fr", "cs")):
        for split, theirs in (("train", "train"), ("valid", "val"), ("test", "test2016")):
            (data / f"{theirs}.{language}").write_bytes((generated / f"{split}.{ours}").read_bytes())
    config = load_config("configs/multi30k_multilingual.yaml", {
        "data.root": str(data), "tokenizer.vocab_size": 64, "tokenizer.model_type": "word",
        "model.d_model": 32, "model.num_heads": 2, "model.num_encoder_layers": 1, "model.num_decoder_layers": 1,
        "model.ffn_dim": 64, "training.batch_tokens": 300, "training.max_steps": 2, "training.validate_every": 2,
        "training.warmup_steps": 1, "training.num_threads": 1, "training.device": "cpu"})
    assert config.data.directions() == [("de", "en"), ("fr", "en"), ("cs", "en"), ("en", "de"), ("en", "fr"),
                                        ("en", "cs")]
    assert (config.training.max_minutes, config.training.schedule_horizon) == (60, "minutes")
    summary = train(config, tmp_path / "run", show_progress=False)
    assert summary["step"] == 2
    record = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()][-1]
    assert list(record["directions"]) == ["de-en", "fr-en", "cs-en", "en-de", "en-fr", "en-cs"]


def test_reproduce_writes_a_results_row_per_direction(corpus, tmp_path):
    """scripts/reproduce.py on a multilingual config: a row per direction, each scored on its own test files
    (it evaluated data.src_lang -> data.tgt_lang only, which a multilingual config does not name)."""
    import subprocess
    import sys
    from pathlib import Path

    directions = [("aa", "bb"), ("aa", "cc"), ("bb", "aa")]
    config = tmp_path / "multi.yaml"
    config.write_text(yaml.safe_dump(multilingual_config(corpus, directions, max_steps=2, validate_every=2).to_dict()),
                      encoding="utf-8")
    results = tmp_path / "results.jsonl"
    script = Path(__file__).resolve().parents[1] / "scripts" / "reproduce.py"
    done = subprocess.run([sys.executable, str(script), str(config), "--output-dir", str(tmp_path / "run"),
                           "--results", str(results), "--device", "cpu"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    assert [row["name"] for row in rows] == [f"multi {s}-{t}" for s, t in directions]
    assert all((tmp_path / "run" / f"test.{s}-{t}.hyp").is_file() for s, t in directions)


@pytest.mark.parametrize("corpus_keys, message", [
    ({"src_lang": "bb", "tgt_lang": "aa"}, "the run's one direction is data.src_lang -> data.tgt_lang"),
    ({"valid_prefix": "test"}, "a run of one direction uses 'data.valid_prefix'"),
    ({"test_prefix": "valid"}, "a run of one direction uses 'data.test_prefix'"),
])
def test_a_run_of_one_direction_takes_its_direction_and_sets_from_data(corpus, corpus_keys, message):
    """Corpus-level directions and sets are for several directions: with one, training, evaluate and the server
    read data.*, so a corpus naming others would be trained, validated and served three different ways."""
    raw = multilingual_config(corpus, [("aa", "bb")]).to_dict()
    raw["data"].update(src_lang="aa", tgt_lang="bb")
    raw["data"]["train_corpora"][0].update({"src_lang": "", "tgt_lang": "", **corpus_keys})
    with pytest.raises(TransformerMTError, match=re.escape(message)):
        config_from_dict(raw)


def test_plot_attention_picks_the_direction_and_back_translate_refuses_several(trained, corpus, tmp_path):
    trained = trained[0]
    pytest.importorskip("matplotlib")
    sentence = (corpus / "test.aa").read_text().splitlines()[0]
    assert_clean_error(run_cli("plot", "--model", trained, "--attention", sentence, "--output", tmp_path / "a"),
                       "--target-language")
    drawn = run_cli("plot", "--model", trained, "--attention", sentence, "--target-language", "cc",
                    "--output", tmp_path / "b")
    assert drawn.returncode == 0, drawn.stderr
    assert list((tmp_path / "b").glob("attention*"))
    assert_clean_error(run_cli("back-translate", "--model", trained, "--input", corpus / "test.bb",
                               "--output-prefix", tmp_path / "bt"), "back-translate takes a reverse model of one direction")
    assert not list(tmp_path.glob("bt*"))
