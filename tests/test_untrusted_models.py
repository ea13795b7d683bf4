"""A model's config is data (issue 25): it never reads the environment; the server leaks no secret or path,
obeys its API key everywhere, answers CORS only when asked, and takes no ambiguous value for a number."""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
import urllib.request

import pytest
import torch
from conftest import assert_clean_error, run_cli, start_server, stop_server

from transformer_mt import Translator
from transformer_mt.checkpoint import load_checkpoint
from transformer_mt.config import load_config
from transformer_mt.errors import TransformerMTError

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from transformer_mt.serving.server import create_app  # noqa: E402

SECRET = "s3cr3t-value-of-the-user"


def _crafted_run(run, tmp_path):
    """A copy of ``run`` whose checkpoint's stored config asks for ${PROBE_SECRET} and ${HOME}."""
    copy = tmp_path / "crafted_run"
    shutil.copytree(run, copy)
    for name in ("checkpoint_best.pt", "checkpoint_last.pt"):
        state = load_checkpoint(copy / name)
        state["config"]["data"]["src_lang"] = "${PROBE_SECRET}"
        state["config"]["data"]["root"] = "${HOME}/data"
        torch.save(state, copy / name)
    return copy


def test_a_checkpoints_config_never_reads_the_environment(small_run, tmp_path, monkeypatch):
    monkeypatch.setenv("PROBE_SECRET", SECRET)
    translator = Translator.from_run(_crafted_run(small_run[2], tmp_path), device="cpu")
    assert translator.config.data.src_lang == "${PROBE_SECRET}"
    assert str(translator.config.data.root) .startswith("${HOME}")


def test_only_a_config_file_the_user_passes_reads_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("PROBE_SECRET", SECRET)
    path = tmp_path / "config.yaml"
    path.write_text("data:\n  root: ${PROBE_SECRET}/data\n  src_lang: ${NOT_SET_ANYWHERE:-de}\n")
    assert str(load_config(path).data.root) == f"{SECRET}/data"
    assert load_config(path).data.src_lang == "de"
    exported = load_config(path, environment=False)  # how an export's config.yaml is read
    assert str(exported.data.root) == "${PROBE_SECRET}/data"


def test_the_server_leaks_no_variable_and_no_path(small_run, tmp_path, monkeypatch):
    monkeypatch.setenv("PROBE_SECRET", SECRET)
    crafted = _crafted_run(small_run[2], tmp_path)
    keys = tmp_path / "keys"
    keys.write_text("the-key\n")
    server, base = start_server(crafted, "--api-key-file", keys)
    try:
        languages = urllib.request.urlopen(base + "/languages", timeout=10).read().decode()
        request = urllib.request.Request(base + "/translate", data=json.dumps(
            {"q": "ba be", "api_key": "the-key"}).encode(), headers={"Content-Type": "application/json"})
        answer = urllib.request.urlopen(request, timeout=60).read().decode()
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(base + "/v1/info", timeout=10)
        assert refused.value.code == 403
        info = urllib.request.urlopen(base + "/v1/info?api_key=the-key", timeout=10).read().decode()
        for text in (languages, answer, info):
            assert SECRET not in text and str(tmp_path) not in text
        assert json.loads(info)["model"] == "crafted_run"
    finally:
        stop_server(server)


@pytest.fixture(scope="module")
def translator(small_run):
    return Translator.from_run(small_run[2], device="cpu")


def test_cors_is_off_by_default_and_answers_preflight_when_configured(translator):
    preflight = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "content-type"}
    with TestClient(create_app(translator, max_wait_ms=1)) as plain:
        assert "access-control-allow-origin" not in plain.get("/languages", headers={"Origin": "https://a.b"}).headers
        assert plain.options("/translate", headers=preflight).status_code == 405
    with TestClient(create_app(translator, max_wait_ms=1, cors_origins=["https://app.example"])) as cors:
        answer = cors.options("/translate", headers=preflight)
        assert answer.status_code == 200
        assert answer.headers["access-control-allow-origin"] == "https://app.example"
        assert "POST" in answer.headers["access-control-allow-methods"]
        got = cors.post("/translate", json={"q": "ba"}, headers={"Origin": "https://app.example"})
        assert got.status_code == 200 and got.headers["access-control-allow-origin"] == "https://app.example"
        other = cors.post("/translate", json={"q": "ba"}, headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers


@pytest.mark.parametrize("value", [1.5, True, "1.5", "yes", 1e300, 10**40, "9" * 40])
def test_alternatives_that_are_not_whole_numbers_are_refused(translator, value):
    with TestClient(create_app(translator, max_wait_ms=1)) as client:
        answer = client.post("/translate", json={"q": "ba", "alternatives": value})
        assert answer.status_code == 400 and "whole number" in answer.json()["error"]
        huge = client.post("/translate", content=b'{"q": "ba", "alternatives": 1e400}',
                           headers={"content-type": "application/json"})
        assert huge.status_code == 400
        assert client.post("/translate", json={"q": "ba", "alternatives": 1.0}).status_code == 200


def test_alignment_yes_and_invalid_utf8_forms_are_refused(translator):
    with TestClient(create_app(translator, max_wait_ms=1)) as client:
        answer = client.post("/v1/translate", json={"text": "ba", "alignment": "yes"})
        assert answer.status_code == 422
        form = client.post("/translate", content=b"q=%ff%fe&source=auto",
                           headers={"content-type": "application/x-www-form-urlencoded"})
        assert form.status_code == 400 and "UTF-8" in form.json()["error"]


def test_a_client_that_drops_a_partial_upload_leaves_no_traceback(small_run):
    server, base = start_server(small_run[2])
    try:
        port = int(base.rsplit(":", 1)[1])
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
                raw.sendall(b"POST /translate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                            b"Content-Length: 100000\r\n\r\n{\"q\": \"ba")
                time.sleep(0.2)
        time.sleep(0.5)
        assert urllib.request.urlopen(base + "/health", timeout=10).status == 200
    finally:
        stderr = stop_server(server)  # asserts that no traceback was printed
    assert "Exception in ASGI application" not in stderr


# --- resource limits -------------------------------------------------------------------------------------------

ALIAS_BOMB = "".join(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9) if i else ', '.join(['x'] * 9)}]\n"
                     for i in range(9))


@pytest.mark.parametrize("text, fragment", [
    (ALIAS_BOMB + "training:\n  max_steps: *l8\n", "expand to more than"),
    ("training: &t\n  betas: [0.9, *t]\n", "refers to a node that contains it"),
    ("training:\n  max_steps: " + "9" * 5000 + "\n", "Exceeds the limit"),
])
def test_yaml_that_would_take_the_machine_is_one_line(tmp_path, text, fragment):
    config = tmp_path / "config.yaml"
    config.write_text(text)
    line = assert_clean_error(run_cli("train", "--config", config, "--output-dir", tmp_path / "run", timeout=60),
                              str(config), fragment)
    assert len(line) < 400 and not (tmp_path / "run").exists()


def test_a_long_list_in_a_config_makes_a_short_error(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("training:\n  lr: [" + ", ".join(["1"] * 5000) + "]\n")
    line = assert_clean_error(run_cli("train", "--config", config, "--output-dir", tmp_path / "run"), "training.lr")
    assert len(line) < 300


def test_a_model_too_large_for_memory_is_refused_before_allocating(small_run, tmp_path):
    tmp, data, run = small_run
    config = tmp_path / "config.yaml"
    config.write_text((run / "config.yaml").read_text())
    result = run_cli("train", "--config", config, "--output-dir", tmp_path / "new_run",
                     "--set", "model.d_model=1048576", "--set", "model.ffn_dim=100000000", timeout=120)
    assert_clean_error(result, "model.d_model 1048576", "more than this machine's memory")
    assert not (tmp_path / "new_run").exists()  # refused before the run directory or the tokenizer

    crafted = tmp_path / "crafted_run"
    shutil.copytree(run, crafted)
    for name in ("checkpoint_best.pt", "checkpoint_last.pt"):
        state = load_checkpoint(crafted / name)
        state["config"]["model"].update(d_model=2**24, ffn_dim=2**30, num_heads=1)
        torch.save(state, crafted / name)
    with pytest.raises(TransformerMTError, match="more than this machine's memory"):
        Translator.from_run(crafted, device="cpu")


def test_inputs_that_are_not_files_get_one_clear_line(small_run, tmp_path):
    _, _, run = small_run
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert_clean_error(run_cli("translate", "--model", run, "--device", "cpu", "--checkpoint", fifo, "ba"),
                       "not a regular file")
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    assert_clean_error(run_cli("translate", "--model", a_file, "--device", "cpu", "ba"), "is not a directory")
    assert_clean_error(run_cli("translate", "--model", run, "--device", "cpu", "--input", "/dev/zero"),
                       "/dev/zero is a device")
    null = run_cli("translate", "--model", run, "--device", "cpu", "--input", "/dev/null")
    assert "Traceback" not in null.stderr  # /dev/null is an empty input, as a shell user expects
    export = tmp_path / "export"
    export.mkdir()
    (export / "export.json").write_text("{}")
    assert_clean_error(run_cli("translate", "--model", export, "--device", "cpu", "ba"), "--engine ctranslate2")


def test_a_huge_sparse_tokenizer_model_is_refused_without_reading_it(small_run, tmp_path):
    _, _, run = small_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    os.truncate(copy / "spm.model", 3 * 2**30)  # sparse: takes no disk space
    with pytest.raises(TransformerMTError, match="spm.model is 3072 MiB"):
        Translator.from_run(copy, device="cpu")


def test_a_negative_positions_in_an_export_is_one_clear_error(tmp_path):
    pytest.importorskip("ctranslate2")
    from transformer_mt.interop.ct2_translator import CTranslate2Translator

    (tmp_path / "export.json").write_text(json.dumps({"positions": -5, "source_tokenizer": "spm.model",
                                                      "target_tokenizer": "spm.model"}))
    with pytest.raises(TransformerMTError, match="export.json is damaged"):
        CTranslate2Translator(tmp_path)


def test_a_large_chunked_body_gets_413_not_a_reset(small_run):
    import httpx

    server, base = start_server(small_run[2], "--max-body-bytes", "4000")
    try:
        def chunks():  # no Content-Length: 2 MB sent in pieces
            for _ in range(32):
                yield b"x" * 65536

        answer = httpx.post(base + "/translate", content=chunks(), headers={"content-type": "application/json"},
                            timeout=60)
        assert answer.status_code == 413 and "limit of 4000 bytes" in answer.json()["error"]
    finally:
        stop_server(server)


def test_misleading_messages_name_the_real_problem(small_run, tmp_path):
    _, _, run = small_run
    line = assert_clean_error(run_cli("translate", "--model", run, "--device", "cpu", "--precision", "fp16", "ba"),
                              "--precision fp16 needs a CUDA device")
    assert "training.precision" not in line
    # An unknown sacreBLEU tokenizer is refused before the test set is decoded (no translation is printed).
    result = run_cli("evaluate", "--model", run, "--device", "cpu", "--split", "test", "--tokenize", "bogus")
    assert_clean_error(result, "--tokenize 'bogus' is not a sacreBLEU tokenizer", "13a")


class _Payload:
    def __reduce__(self):
        return (os.system, ("echo this must never run",))


@pytest.mark.parametrize("protocol", [2, 4])
def test_a_plain_pickle_with_a_payload_is_called_unsafe(tmp_path, protocol):
    import pickle

    path = tmp_path / "checkpoint_best.pt"
    with open(path, "wb") as handle:
        pickle.dump({"model": _Payload()}, handle, protocol=protocol)
    result = run_cli("translate", "--model", tmp_path, "--checkpoint", path, "--device", "cpu", "ba")
    assert_clean_error(result, "system", "may be unsafe")
    assert "Warning" not in result.stderr and "must never run" not in result.stdout


def test_a_split_with_relative_data_paths_says_where_it_looked(small_run, tmp_path):
    _, _, run = small_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    for name in ("checkpoint_best.pt", "checkpoint_last.pt"):
        state = load_checkpoint(copy / name)
        state["config"]["data"]["root"] = "relative/data"
        torch.save(state, copy / name)
    assert_clean_error(run_cli("evaluate", "--model", copy, "--device", "cpu", "--split", "test"),
                       "relative path, read from the working directory", "--src FILE --ref FILE")
