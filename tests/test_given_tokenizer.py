"""Bring your own SentencePiece model(s): tokenizer.model / tokenizer.source_model + target_model."""

import os

import pytest
import sentencepiece as spm
import yaml
from conftest import assert_clean_error, run_cli, tiny_config, write_reverse_corpus

from transformer_mt import train
from transformer_mt.checkpoint import file_sha256, load_checkpoint
from transformer_mt.config import TokenizerConfig, config_from_dict, load_config
from transformer_mt.data.tokenizer import build_tokenizers
from transformer_mt.errors import TransformerMTError


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_reverse_corpus(tmp_path_factory.mktemp("data"), n_train=200, n_valid=8, n_test=8)


@pytest.fixture(scope="module")
def shared_models(tmp_path_factory, corpus):
    """A joint model and a source/target pair, trained once outside any run directory."""
    folder = tmp_path_factory.mktemp("tokenizers")
    build_tokenizers(folder, TokenizerConfig(model_type="word", vocab_size=34), corpus / "train.src",
                     corpus / "train.tgt")
    build_tokenizers(folder, TokenizerConfig(joint=False, model_type="word", vocab_size=34), corpus / "train.src",
                     corpus / "train.tgt")
    return folder


def config_with(corpus, tokenizer: dict, max_steps=2):
    config = tiny_config(corpus, max_steps=max_steps, validate_every=2, warmup_steps=1).to_dict()
    config["tokenizer"].update(tokenizer)
    config["model"]["share_embeddings"] = config["tokenizer"]["joint"]
    return config_from_dict(config)


def test_a_given_joint_model_is_copied_into_the_run_and_recorded_not_trained(tmp_path, corpus, shared_models):
    given = shared_models / "spm.model"
    run = tmp_path / "run"
    train(config_with(corpus, {"model": str(given)}), run, show_progress=False)
    assert (run / "spm.model").read_bytes() == given.read_bytes()
    assert not (run / "spm.train.log").exists()  # nothing was trained
    state = load_checkpoint(run / "checkpoint_last.pt")
    assert state["tokenizer_sha256"] == {"src": file_sha256(given), "tgt": file_sha256(given)}
    assert file_sha256(given) in (run / "train.log").read_text()
    # Resuming reuses the copy (same file); a changed original is refused, not silently mixed in.
    train(config_with(corpus, {"model": str(given)}, max_steps=3), run, show_progress=False)
    assert load_checkpoint(run / "checkpoint_last.pt")["step"] == 3


def test_given_source_and_target_models(tmp_path, corpus, shared_models):
    run = tmp_path / "run"
    tokenizer = {"joint": False, "source_model": str(shared_models / "spm.src.model"),
                 "target_model": str(shared_models / "spm.tgt.model")}
    train(config_with(corpus, tokenizer), run, show_progress=False)
    for side in ("src", "tgt"):
        assert (run / f"spm.{side}.model").read_bytes() == (shared_models / f"spm.{side}.model").read_bytes()
    state = load_checkpoint(run / "checkpoint_last.pt")
    assert state["tokenizer_sha256"]["tgt"] == file_sha256(shared_models / "spm.tgt.model")


def test_a_model_that_changed_since_the_run_started_is_refused(tmp_path, corpus, shared_models):
    given = tmp_path / "mine.model"
    given.write_bytes((shared_models / "spm.model").read_bytes())
    run = tmp_path / "run"
    train(config_with(corpus, {"model": str(given)}), run, show_progress=False)
    given.write_bytes((shared_models / "spm.src.model").read_bytes())  # another model at the same path
    with pytest.raises(TransformerMTError, match="not the tokenizer this run started with"):
        train(config_with(corpus, {"model": str(given)}, max_steps=3), run, show_progress=False)
    assert load_checkpoint(run / "checkpoint_last.pt")["step"] == 2  # the run is as it was


def write_yaml(tmp_path, corpus, tokenizer: dict):
    config = tiny_config(corpus).to_dict()
    config["tokenizer"].update(tokenizer)
    config["model"]["share_embeddings"] = config["tokenizer"]["joint"]
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def default_ids_model(tmp_path, corpus):
    """A SentencePiece model with SentencePiece's own default ids (unk 0, bos 1, eos 2, no pad)."""
    prefix = tmp_path / "default_ids"
    spm.SentencePieceTrainer.train(input=str(corpus / "train.src"), model_prefix=str(prefix), vocab_size=33,
                                   model_type="word")
    return prefix.with_suffix(".model")


@pytest.mark.parametrize("kind, problem", [
    ("missing", "does not exist"),
    ("directory", "is a directory"),
    ("fifo", "is not a regular file"),
    ("text", "is not a SentencePiece model"),
    ("empty", "is not a SentencePiece model"),
    ("default_ids", "pad/unk/bos/eos = -1/0/1/2"),
])
def test_an_unusable_model_is_one_error_naming_the_key(tmp_path, corpus, kind, problem):
    path = tmp_path / f"{kind}.model"
    if kind == "directory":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "text":
        path.write_text("this is not a model\n")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "default_ids":
        path = default_ids_model(tmp_path, corpus)
    config = write_yaml(tmp_path, corpus, {"model": str(path)})
    with pytest.raises(TransformerMTError, match=problem) as error:
        load_config(config)
    assert "'tokenizer.model'" in str(error.value)
    if kind == "default_ids":
        assert "--pad_id=0 --unk_id=1 --bos_id=2 --eos_id=3" in str(error.value)


def test_the_command_line_reports_a_bad_model_in_one_line(tmp_path, corpus):
    config = write_yaml(tmp_path, corpus, {"joint": False, "source_model": str(tmp_path / "nowhere.model"),
                                           "target_model": str(tmp_path / "nowhere.model")})
    result = run_cli("train", "--config", config, "--output-dir", tmp_path / "run")
    assert_clean_error(result, "'tokenizer.source_model'", "does not exist")
    assert not (tmp_path / "run").exists()  # refused before the run directory was made


@pytest.mark.parametrize("tokenizer, message", [
    ({"joint": False, "model": "x.model"}, "needs 'tokenizer.joint: true'"),
    ({"source_model": "a.model", "target_model": "b.model"}, "need 'tokenizer.joint: false'"),
    ({"joint": False, "source_model": "a.model"}, "'tokenizer.target_model' is not"),
])
def test_keys_that_do_not_go_together_are_refused(corpus, tokenizer, message):
    config = tiny_config(corpus).to_dict()
    config["tokenizer"].update(tokenizer)
    config["model"]["share_embeddings"] = tokenizer.get("joint", True)
    with pytest.raises(TransformerMTError, match=message):
        config_from_dict(config)
