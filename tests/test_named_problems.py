"""Messages that named the wrong problem (issue 39, the fourth probe): each now names the real problem and its fix,
in one line, and the test shows the message the probe saw is gone. (The per-text limit of the server is in
test_serve.py, a FIFO metrics.jsonl in test_bounded_reads.py, max_position_embeddings in test_marian_import.py.)"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import yaml
from conftest import assert_clean_error, run_cli, tiny_config, write_reverse_corpus
from hypothesis import given, settings
from hypothesis import strategies as st

from transformer_mt.errors import TransformerMTError


def test_a_run_json_that_is_a_fifo_is_named_as_such_not_as_missing(tmp_path):
    """Once: 'already holds files (run.json) and is not a transformer-mt run directory (no run.json)'."""
    from transformer_mt.training.rundir import claim_run_dir

    run = tmp_path / "run"
    run.mkdir()
    os.mkfifo(run / "run.json")
    with pytest.raises(TransformerMTError) as error:
        claim_run_dir(run, overwrite=False)
    message = str(error.value)
    assert "its run.json is not a regular file (a device, FIFO or socket)" in message
    assert "no run.json" not in message and "\n" not in message
    (run / "run.json").unlink()
    (run / "run.json").write_text('["not", "ours"]')
    with pytest.raises(TransformerMTError, match="its run.json is not the JSON file transformer-mt writes there"):
        claim_run_dir(run, overwrite=False)


def test_a_cache_dir_where_no_file_can_be_made_is_blamed_not_the_run_directory(tmp_path):
    """Once: 'run directory ... is damaged or not writable: No such file or directory: .train.src-....lock'."""
    data = write_reverse_corpus(tmp_path / "data", n_train=60, n_valid=4, n_test=4)
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(tiny_config(data, max_steps=1).to_dict()))
    result = run_cli("prepare", "--config", config, "--output-dir", tmp_path / "run", "--set", "data.cache_dir=/proc")
    line = assert_clean_error(result, "the encoded corpus cannot be written to /proc",
                              "its lock file cannot be created there", "point 'data.cache_dir' at a directory")
    assert "run directory" not in line and "free some space" not in line


def test_a_seed_out_of_range_is_told_the_range():
    """Once: 'must be a whole number >= 0, got 9223372036854775808' (the value was >= 0)."""
    from transformer_mt.decoding.logits import search_options

    with pytest.raises(TransformerMTError, match=r"from 0 to 9223372036854775807 \(2\*\*63 - 1\), got 9223372036854775808"):
        search_options(top_k=5, seed=2**63)
    search_options(top_k=5, seed=2**63 - 1)


def _multipart(fields: dict[str, str], boundary: str = "XyZ") -> tuple[str, bytes]:
    body = b"".join(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
                    for name, value in fields.items()) + f"--{boundary}--".encode()
    return f"multipart/form-data; boundary={boundary}", body


@settings(max_examples=80, deadline=None)
@given(cut=st.floats(0.0, 1.0, exclude_max=True))
def test_a_multipart_body_cut_off_is_refused_as_cut_off(cut):
    """Once answered 403 'missing or invalid API key' when the cut fell before the api_key field's value."""
    pytest.importorskip("python_multipart")
    from transformer_mt.serving.libretranslate import _parse_multipart
    from transformer_mt.serving.limits import ApiError

    content_type, body = _multipart({"q": "ba de gi", "source": "src", "target": "tgt", "api_key": "secret"})
    fields, _ = _parse_multipart(content_type, body)
    assert fields["api_key"] == "secret"
    assert _parse_multipart(content_type, body + b"\r\n")[0] == fields  # a CRLF after the end is allowed
    with pytest.raises(ApiError) as error:
        _parse_multipart(content_type, body[:int(cut * len(body))])
    assert error.value.status == 400
    assert "cut off" in error.value.message or "malformed" in error.value.message


def test_an_empty_output_prefix_is_called_empty_not_a_directory():
    from transformer_mt.data.back_translation import check_output_prefix

    with pytest.raises(TransformerMTError, match="--output-prefix is empty; give a file name prefix, e.g. bt") as error:
        check_output_prefix("")
    assert "directory" not in str(error.value)


def test_only_a_parallel_corpus_is_told_to_drop_a_line_from_both_sides(tmp_path):
    from transformer_mt.data.batches import read_lines, read_parallel

    bad, good = tmp_path / "bad.txt", tmp_path / "good.txt"
    bad.write_bytes(b"fine\ncaf\xe9\n")
    good.write_text("one\ntwo\n", encoding="utf-8")
    with pytest.raises(TransformerMTError) as error:
        read_lines(bad, "--input")
    assert "line 2" in str(error.value) and str(error.value).endswith("or remove that line")
    with pytest.raises(TransformerMTError, match="line 2 .* or remove that line from both files"):
        read_parallel(good, bad)


def test_an_unavailable_tokenizer_gets_its_reason_and_fix_on_one_line(monkeypatch):
    """sacreBLEU's reason starts with a line break: the error line once ended at 'is not available: '."""
    from transformer_mt import scoring

    def missing(**_):
        raise RuntimeError("\nJapanese tokenization requires extra dependencies, but you do not have them "
                           "installed.\nPlease install them like so.\n\n    pip install sacrebleu[ja]\n")

    monkeypatch.setattr(scoring, "BLEU", missing)
    for call in (lambda: scoring.check_tokenize("ja-mecab"), lambda: scoring.score(["a"], ["a"], "ja-mecab")):
        with pytest.raises(TransformerMTError) as error:
            call()
        message = str(error.value)
        assert "\n" not in message
        assert "(Japanese tokenization requires extra dependencies" in message
        assert "pip install 'sacrebleu[ja]'" in message and "choose another tokenizer" in message


@pytest.mark.parametrize("key, value", [("max_length_a", 1e300), ("max_length_b", 10**9), ("length_penalty", 1e308)])
def test_decoding_values_stored_in_a_checkpoint_are_refused_naming_the_key(small_run, tmp_path, key, value):
    """Once: 'the length limit max_length_a * source length + max_length_b needs ...', naming neither the
    checkpoint nor the key."""
    from transformer_mt import checkpoint as ckpt

    state = ckpt.load_checkpoint(Path(small_run[2]) / "checkpoint_best.pt")
    state["config"]["decoding"][key] = value
    crafted = tmp_path / "crafted.pt"
    torch.save(state, crafted)
    result = run_cli("translate", "--model", small_run[2], "--checkpoint", crafted, "ba de")
    assert_clean_error(result, f"config stored in {crafted}: key 'decoding.{key}' must be <=")


@pytest.mark.parametrize("damage", ["truncated", "text", "nan", "version as text"])
def test_upgrade_checkpoint_calls_a_damaged_file_damaged_not_an_earlier_format(small_run, tmp_path, damage):
    """A damaged, truncated or NaN checkpoint was "in an earlier checkpoint format" and the user was told to
    --trust it (second probe); a format version that is text read "has version 2, this reads version 2"."""
    import shutil

    path = tmp_path / "checkpoint.pt"
    shutil.copy(small_run[2] / "checkpoint_best.pt", path)
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:5000])
    elif damage == "text":
        path.write_text("hello\n")
    else:
        state = torch.load(path, weights_only=True)
        if damage == "nan":
            next(iter(state["model"].values())).fill_(float("nan"))
        else:
            state["format_version"] = "2"
        torch.save(state, path)
    for trust in ([], ["--trust"]):
        result = run_cli("upgrade-checkpoint", *trust, path)
        assert_clean_error(result, str(path))
        assert "earlier checkpoint format" not in result.stderr and "pass --trust" not in result.stderr
        assert ".upgrade-" not in result.stderr  # no temporary path
    if damage == "version as text":
        assert "its format version '2' is not a number" in result.stderr
