"""Inputs checked where they enter, before any work: where the results go (standard output closed or full),
model sizes, source lengths, and the messages that name the real problem."""

import re
import subprocess
import sys

import pytest
from conftest import assert_clean_error


def run_with_stdout(stdout, *args, cwd=None):
    """The CLI with standard output ``stdout``: "full" (/dev/full) or "closed" (descriptor 1 closed)."""
    command = [sys.executable, "-m", "transformer_mt.cli", *map(str, args)]
    if stdout == "closed":
        command = ["bash", "-c", 'exec "$@" >&-', "bash", *command]
        result = subprocess.run(command, capture_output=False, stderr=subprocess.PIPE, timeout=300, cwd=cwd)
    else:
        with open("/dev/full", "w") as full:
            result = subprocess.run(command, stdout=full, stderr=subprocess.PIPE, timeout=300, cwd=cwd)
    result.stderr = result.stderr.decode("utf-8", "replace")
    return result


@pytest.fixture
def scored_files(tmp_path):
    (tmp_path / "hyp.txt").write_text("ba de gi\nko mu\n", encoding="utf-8")
    (tmp_path / "ref.txt").write_text("ba de gi\nko mu pa\n", encoding="utf-8")
    return tmp_path / "hyp.txt", tmp_path / "ref.txt"


@pytest.mark.parametrize("stdout", ["full", "closed"])
@pytest.mark.parametrize("json_flag", [[], ["--json"]])
def test_evaluate_never_exits_0_when_the_score_cannot_be_printed(scored_files, stdout, json_flag):
    hyp, ref = scored_files
    result = run_with_stdout(stdout, "evaluate", "--hyp", hyp, "--ref", ref, *json_flag)
    line = assert_clean_error(result, "standard output")
    assert "Exception ignored" not in result.stderr
    assert "--output" not in line  # evaluate --output writes translations (refused with --hyp): not the fix


@pytest.mark.parametrize("stdout", ["full", "closed"])
def test_translate_to_a_full_or_closed_standard_output_is_one_error(small_run, stdout, tmp_path):
    run = small_run[2]
    result = run_with_stdout(stdout, "translate", "--model", run, "ba de gi")
    assert_clean_error(result, "standard output", "--output" if stdout == "closed" else "could not be written")
    assert "Exception ignored" not in result.stderr
    # --output FILE needs no standard output.
    result = run_with_stdout(stdout, "translate", "--model", run, "--output", tmp_path / "out.txt", "ba de gi")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out.txt").read_text(encoding="utf-8").strip()


def test_the_memory_estimate_counts_each_layers_objects_not_only_its_weights(monkeypatch):
    """A million narrow layers are ~9 GB of weights but ~64 GB once built: refused on a 16 GiB machine."""
    from transformer_mt import model as model_module
    from transformer_mt.config import ModelConfig
    from transformer_mt.errors import TransformerMTError

    monkeypatch.setattr(model_module, "_physical_memory", lambda: 16 << 30)
    narrow = ModelConfig(d_model=16, num_heads=2, ffn_dim=16, num_encoder_layers=500_000,
                         num_decoder_layers=500_000, max_positions=64)
    assert 4 * model_module.parameter_count(narrow, 100, 100) < 16 << 30  # the weights alone would pass
    with pytest.raises(TransformerMTError, match="more than this machine's memory"):
        model_module.check_model_fits(narrow, 100, 100)
    model_module.check_model_fits(ModelConfig(num_encoder_layers=6, num_decoder_layers=6), 32000, 32000)


@pytest.fixture(scope="module")
def short_run(small_run, tmp_path_factory):
    """small_run's model told it has 16 positions (the table is not saved: the weights are the same)."""
    import shutil

    from transformer_mt import checkpoint as ckpt

    run = tmp_path_factory.mktemp("short") / "run"
    shutil.copytree(small_run[2], run)
    for path in run.glob("checkpoint_*.pt"):
        state = ckpt.load_checkpoint(path)
        state["config"]["model"]["max_positions"] = 16
        state["config"]["data"]["max_len"] = 16
        ckpt.atomic_save(state, path)
    return run


def long_sentence(words):
    from conftest import WORDS

    return " ".join(WORDS[i % len(WORDS)] for i in range(words))


def test_a_source_longer_than_the_models_positions_is_cut_with_a_warning(short_run, caplog):
    import logging

    from transformer_mt import Translator
    from transformer_mt.decoding.translator import encode_sentences

    translator = Translator.from_run(short_run)
    encoded = encode_sentences([long_sentence(200), "ba de"], translator.src_tokenizer, translator.config)
    assert len(encoded[0]) == 16 and len(encoded[1]) == 2
    with caplog.at_level(logging.WARNING, logger="transformer_mt"):
        out = translator.translate([long_sentence(200), "ba de"], beam_size=1)
    assert len(out) == 2
    assert any("longer than the model's 16 positions (model.max_positions) were cut" in r.getMessage()
               for r in caplog.records)
    # Cut, the long source translates as its first 16 tokens do.
    assert out[0] == translator.translate([long_sentence(16)], beam_size=1)[0]


def test_the_cli_cuts_a_huge_line_given_as_one_sentence(short_run):
    from conftest import run_cli

    line = long_sentence(300_000)  # ~900 kB, one sentence: once no answer
    result = run_cli("translate", "--model", short_run, "--beam-size", "1", "--no-split-sentences",
                     input_bytes=(line + "\nba de\n").encode(), timeout=120)
    assert result.returncode == 0, result.stderr
    assert "model.max_positions) were cut" in result.stderr and result.stdout.count("\n") == 2
    # Both warnings give the input's own length (once the data.max_len one gave the length it was cut to).
    longest = {int(n) for n in re.findall(r"longest: (\d+)", result.stderr)}
    assert len(longest) == 1 and longest.pop() > 200_000, result.stderr


# Messages that named another problem than the real one.

def test_config_given_a_directory_says_so(tmp_path, capsys):
    from test_decoding_input import main_error

    line = main_error(capsys, "train", "--config", tmp_path)
    assert "is a directory" in line and "does not exist" not in line
    (tmp_path / "config.yaml").write_text("model: {}\n")
    assert f"--config {tmp_path / 'config.yaml'}" in main_error(capsys, "train", "--config", tmp_path)


def test_a_damaged_init_from_checkpoint_names_the_config_key_not_a_missing_option(small_run, tmp_path):
    from conftest import tiny_config

    from transformer_mt import train
    from transformer_mt.errors import TransformerMTError

    damaged = tmp_path / "parent.pt"
    damaged.write_bytes(b"PK\x03\x04 not a checkpoint at all")
    config = tiny_config(small_run[1], max_steps=1, init_from=str(damaged))
    with pytest.raises(TransformerMTError) as caught:
        train(config, tmp_path / "child", show_progress=False)
    message = str(caught.value)
    assert "corrupt or truncated" in message and "'training.init_from'" in message
    assert "--checkpoint" not in message  # train has no such option


def test_upgrade_checkpoint_shows_no_pytorch_advice_to_file_an_issue(small_run, tmp_path):
    import shutil

    import torch
    from conftest import run_cli
    from test_safe_checkpoints import make_format1

    old = tmp_path / "old"
    shutil.copytree(small_run[2], old)
    make_format1(old / "checkpoint_last.pt")
    torch.save(torch.load(old / "checkpoint_last.pt", weights_only=False), old / "checkpoint_last.pt",
               pickle_protocol=4)  # torch's weights-only reader warns about any protocol but 2
    result = run_cli("upgrade-checkpoint", "--trust", old / "checkpoint_last.pt")
    assert "file an issue" not in result.stderr and "Traceback" not in result.stderr


def test_a_fifo_tokenizer_model_is_named_as_such_not_missing(small_run, tmp_path):
    import os
    import shutil

    from transformer_mt import Translator
    from transformer_mt.errors import TransformerMTError

    run = tmp_path / "run"
    shutil.copytree(small_run[2], run)
    (run / "spm.model").unlink()
    os.mkfifo(run / "spm.model")
    with pytest.raises(TransformerMTError, match=r"spm.model is not a regular file \(a device, pipe or socket\)"):
        Translator.from_run(run)


def test_a_checkpoint_that_cannot_be_read_is_not_called_corrupt(small_run, monkeypatch):
    import errno

    import torch

    from transformer_mt import checkpoint as ckpt
    from transformer_mt.errors import TransformerMTError

    def denied(*args, **kwargs):  # what an unreadable file gives a user who is not root
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(torch, "load", denied)
    with pytest.raises(TransformerMTError, match="cannot be read: Permission denied; make it readable") as caught:
        ckpt.load_checkpoint(small_run[2] / "checkpoint_best.pt")
    assert "corrupt" not in str(caught.value)


@pytest.mark.parametrize("options, fragment", [
    ({"beam_size": "5"}, "beam_size must be a whole number"), ({"beam_size": "\u0665"}, "beam_size"),
    ({"batch_size": 2.5}, "batch_size must be a whole number"), ({"nbest": True}, "nbest"),
    ({"max_length_b": "30"}, "max_length_b"), ({"length_penalty": "1"}, "length_penalty must be a number"),
    ({"max_length_a": 1e300}, "max_length_a from 0 to 100"), ({"max_length_b": 10**12}, "max_length_b from 0"),
    ({"max_length_a": -1.0}, "max_length_a"), ({"max_length_b": -3}, "max_length_b")])
def test_counts_and_lengths_of_the_python_api_are_checked_where_they_enter(small_run, options, fragment):
    from transformer_mt import Translator
    from transformer_mt.errors import TransformerMTError

    translator = Translator.from_run(small_run[2])
    with pytest.raises(TransformerMTError, match=fragment):
        translator.translate(["ba de"], **options)


def test_the_server_cuts_a_long_sentence_as_translate_does(short_run, caplog):
    import logging

    pytest.importorskip("fastapi")
    from conftest import live_app

    from transformer_mt import Translator
    from transformer_mt.serving.server import create_app

    translator = Translator.from_run(short_run)
    # Under segment.MAX_SENTENCE_CHARS (a longer run without a full stop is cut into pieces first), nine times
    # the model's 16 positions.
    sentence = long_sentence(150)
    assert len(sentence) < 600
    with caplog.at_level(logging.WARNING, logger="transformer_mt"), \
            live_app(create_app(translator, max_wait_ms=1)) as http:
        answer = http.post("/v1/translate", json={"text": [sentence], "beam_size": 1, "split_sentences": False})
    assert answer.status_code == 200, answer.text
    assert answer.json()["translations"][0][0]["text"] == translator.translate([long_sentence(16)], beam_size=1)[0]
    assert any("(model.max_positions) were cut" in r.getMessage() for r in caplog.records)


def test_standard_input_drops_one_byte_order_mark_as_input_files_do(small_run, tmp_path):
    """Found by test_decoding_input's property test: standard input dropped two BOMs, --input one."""
    from unittest import mock

    from test_decoding_input import FakeStdin

    from transformer_mt import cli

    text = "\ufeff\ufeff"
    (tmp_path / "in.txt").write_text(text, encoding="utf-8")
    outputs = []
    for extra in ([], ["--input", str(tmp_path / "in.txt")]):
        with mock.patch.object(sys, "stdin", FakeStdin(text.encode("utf-8"))):
            assert cli.main(["translate", "--model", str(small_run[2]), "--output", str(tmp_path / "out.txt"),
                             *extra]) == 0
        outputs.append((tmp_path / "out.txt").read_text(encoding="utf-8"))
    assert outputs[0] == outputs[1] == "\n"


def test_help_that_cannot_be_written_and_non_text_sentences_are_one_error(small_run):
    """--help to a full device exits 2 with one error line (argparse ignored the failed write and exited 0);
    the Python API refuses None, bytes and lone surrogates as sentences with a TransformerMTError."""
    import subprocess
    import sys

    from transformer_mt import Translator
    from transformer_mt.errors import TransformerMTError

    with open("/dev/full", "w") as full:
        result = subprocess.run([sys.executable, "-m", "transformer_mt.cli", "--help"], stdout=full,
                                stderr=subprocess.PIPE, text=True, timeout=60)
    assert result.returncode == 2 and result.stderr.startswith("error:") and "Traceback" not in result.stderr
    translator = Translator.from_run(small_run[2], device="cpu")
    for bad in ([None], [b"ba"], ["\ud800"]):
        with pytest.raises(TransformerMTError, match="sentence 0"):
            translator.translate(bad)


# The fourth probe's findings (issue 39): each refused in one line, before any work.

@pytest.mark.parametrize("item, key", [("training.batch_tokens=1000000000000000", "training.batch_tokens"),
                                       ("training.num_threads=100000", "training.num_threads"),
                                       ("tokenizer.input_sentence_size=-1", "tokenizer.input_sentence_size")])
def test_absurd_sizes_are_refused_naming_the_key(tmp_path, item, key):
    from transformer_mt.config import load_config, parse_overrides
    from transformer_mt.errors import TransformerMTError

    config = tmp_path / "c.yaml"
    config.write_text("model: {}\n")
    with pytest.raises(TransformerMTError, match=re.escape(f"key '{key}' must be")):
        load_config(config, parse_overrides([item]))


@pytest.mark.parametrize("text", ["data: " + "[" * 100_000 + "]" * 100_000 + "\n",
                                  "".join("  " * i + f"k{i}:\n" for i in range(3000)) + "  " * 3000 + "x: 1\n"])
def test_a_config_nested_thousands_deep_is_one_error(tmp_path, text):
    from transformer_mt.config import load_config
    from transformer_mt.errors import TransformerMTError

    config = tmp_path / "deep.yaml"
    config.write_text(text)
    with pytest.raises(TransformerMTError, match="deep.yaml"):
        load_config(config)


def test_a_huge_config_file_is_refused_without_being_read_whole(tmp_path):
    from conftest import run_cli

    config = tmp_path / "huge.yaml"
    with open(config, "wb") as handle:
        handle.truncate(6 * 2**30)  # sparse: 6 GB that take no disk
    result = run_cli("train", "--config", config, "--output-dir", tmp_path / "run", timeout=60)
    assert_clean_error(result, "config file ", "huge.yaml is 6 GiB, more than the 3.81 MiB read at most")


@pytest.mark.parametrize("change, message", [
    (lambda s: s.update(tokenizer_sha256="abc"), "'tokenizer_sha256' is a str, not a mapping"),
    (lambda s: s.update(vocab_sizes=[1, 2]), "'vocab_sizes' is a list, not a mapping"),
    (lambda s: s["model"].update(w=s["model"]["w"].to_sparse()), "weight w is a sparse tensor"),
    (lambda s: s["model"].update(w=s["model"]["w"].bool()), "weight w is of type torch.bool"),
])
def test_a_crafted_checkpoint_is_damaged_not_a_traceback(tmp_path, change, message):
    import torch

    from transformer_mt import checkpoint as ckpt
    from transformer_mt.errors import TransformerMTError

    state = {"format_version": ckpt.FORMAT_VERSION, "config": {}, "model": {"w": torch.ones(2, 3)}}
    change(state)
    path = tmp_path / "c.pt"
    ckpt.atomic_save(state, path)
    with pytest.raises(TransformerMTError, match=re.escape(message)):
        ckpt.load_checkpoint(path)


def test_a_cache_folder_everyone_may_write_is_refused(tmp_path):
    from transformer_mt.data.corpus import _check_not_shared
    from transformer_mt.errors import TransformerMTError

    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    with pytest.raises(TransformerMTError, match="may be written by every user"):
        _check_not_shared(shared)
    shared.chmod(0o755)
    _check_not_shared(shared)


def test_upgrade_checkpoint_names_a_fifo_or_device_as_what_it_is(tmp_path):
    import os

    from conftest import run_cli

    os.mkfifo(tmp_path / "fifo")
    for path, said in ((tmp_path / "fifo", "is not a regular file"), ("/dev/null", "is not a regular file"),
                       (tmp_path / "missing", "does not exist")):
        assert_clean_error(run_cli("upgrade-checkpoint", "--trust", path, timeout=60), str(path), said)


@pytest.mark.parametrize("option, value, said", [("--beam-size", "0", "beam_size (--beam-size) must be at least 1"),
                                                 ("--nbest", "0", "nbest (--nbest) must be at least 1"),
                                                 ("--batch-size", "0", "batch_size (--batch-size) must be at least 1"),
                                                 ("--length-penalty", "nan", "length_penalty (--length-penalty) must "
                                                                            "be a finite number")])
def test_a_decoding_option_out_of_range_is_named(small_run, option, value, said):
    from conftest import run_cli

    assert_clean_error(run_cli("translate", "--model", small_run[2], option, value, "ba de"), said)
