"""Shared helpers: tiny models and corpora generated on the fly (tests never download)."""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch

from transformer_mt.config import Config, ModelConfig, config_from_dict
from transformer_mt.model import build_model


def tiny_model(vocab_size: int = 23, pre_norm: bool = False, share: bool = True, seed: int = 0, **overrides):
    torch.manual_seed(seed)
    cfg = ModelConfig(d_model=32, num_heads=4, num_encoder_layers=2, num_decoder_layers=2, ffn_dim=64,
                      dropout=0.0, attention_dropout=0.0, pre_norm=pre_norm, share_embeddings=share,
                      max_positions=64, **overrides)
    return build_model(cfg, vocab_size, vocab_size).eval()


WORDS = [a + b for a in "bdgkmp" for b in "aeiou"]  # 30 invented syllable-words


def write_reverse_corpus(root: Path, n_train: int = 3000, n_valid: int = 100, n_test: int = 100, seed: int = 0):
    """Source: 3-8 random words; target: the same words in reverse order."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)

    def pair():
        words = [rng.choice(WORDS) for _ in range(rng.randint(3, 8))]
        return " ".join(words), " ".join(reversed(words))

    for split, n in (("train", n_train), ("valid", n_valid), ("test", n_test)):
        pairs = [pair() for _ in range(n)]
        (root / f"{split}.src").write_text("".join(p[0] + "\n" for p in pairs), encoding="utf-8")
        (root / f"{split}.tgt").write_text("".join(p[1] + "\n" for p in pairs), encoding="utf-8")
    return root


def tiny_config(data_root: Path, **training) -> Config:
    raw = {
        "data": {"root": str(data_root), "src_lang": "src", "tgt_lang": "tgt", "valid_prefix": "valid",
                 "test_prefix": "test", "max_len": 64},
        "tokenizer": {"model_type": "word", "vocab_size": 34},
        "model": {"d_model": 32, "num_heads": 2, "num_encoder_layers": 1, "num_decoder_layers": 1, "ffn_dim": 64,
                  "dropout": 0.1, "attention_dropout": 0.0},
        "training": {"batch_tokens": 400, "max_steps": 6, "lr": 0.003, "warmup_steps": 5, "validate_every": 3,
                     "log_every": 1, "num_threads": 1, **training},
        "decoding": {"beam_size": 2, "valid_beam_size": 1, "batch_size": 32},
    }
    return config_from_dict(raw)


def run_cli(*args, input_bytes=None, timeout=300):
    """Run the transformer-mt command in a new process; stdout/stderr come back as text."""
    result = subprocess.run([sys.executable, "-m", "transformer_mt.cli", *map(str, args)], input=input_bytes,
                            capture_output=True, timeout=timeout)
    result.stdout = result.stdout.decode("utf-8", "replace")
    result.stderr = result.stderr.decode("utf-8", "replace")
    return result


def assert_clean_error(result, *fragments) -> str:
    """Exit status 2, no traceback, and a last line 'error: ...' holding every fragment; returns that line."""
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in last, (fragment, last)
    return last


def start_training(config_path, run_dir, *extra):
    """``transformer-mt train`` in a background process (text pipes)."""
    return subprocess.Popen([sys.executable, "-m", "transformer_mt.cli", "train", "--config", str(config_path),
                             "--output-dir", str(run_dir), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(predicate, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def live_app(app):
    """``app`` served by a real uvicorn server on 127.0.0.1 (a free port) in a thread; yields an httpx client."""
    import httpx
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.01)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{server.config.port}", timeout=60) as http:
            yield http
    finally:
        server.should_exit = True
        thread.join(30)


def start_server(run_dir, *extra):
    """`transformer-mt serve` in its own process on 127.0.0.1; returns it and its base URL once /health answers."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "transformer_mt.cli", "serve", "--model", str(run_dir),
                               "--port", str(port), "--device", "cpu", *extra],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(base + "/health", timeout=2)
            return server, base
        except (urllib.error.URLError, ConnectionError):
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                raise AssertionError(f"the server did not start: {server.communicate()[1]}") from None
            time.sleep(0.1)


def stop_server(server) -> str:
    server.terminate()  # SIGTERM: a graceful stop
    _, stderr = server.communicate(timeout=60)
    # Uvicorn stops gracefully on SIGTERM, then ends by the same signal, as a service manager expects.
    assert server.returncode in (0, -15), stderr
    assert "Traceback" not in stderr
    return stderr


class Payload:
    """Unpickling this runs ``touch <marker>``: what a malicious model file or crafted parent would do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    """A 2-step model of the reversal task (tmp folder, data folder, run folder), trained once per module."""
    from transformer_mt import train

    tmp = tmp_path_factory.mktemp("small_run")
    data = write_reverse_corpus(tmp / "data", n_train=200, n_valid=5, n_test=5)
    train(tiny_config(data, max_steps=2, validate_every=2), tmp / "run", show_progress=False)
    return tmp, data, tmp / "run"


@pytest.fixture
def reverse_corpus(tmp_path):
    return write_reverse_corpus(tmp_path / "data", n_train=300, n_valid=20, n_test=20)


# Small models run fastest on one thread, and tests may share the machine with a training run.
torch.set_num_threads(1)


def playwright_and_chromium():
    """Playwright's sync API and the path of Debian's chromium, for a browser test.

    Without chromium the test is skipped here, but fails in CI (scripts/setup.sh installs it there),
    so the page is never silently left untested where it matters."""
    sync_api = pytest.importorskip("playwright.sync_api")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        if os.environ.get("CI"):
            pytest.fail("CI must run the browser test: scripts/setup.sh installs Debian's chromium")
        pytest.skip("no chromium on this machine (apt-get install chromium)")
    return sync_api, chromium


def train_language_pair(root, source: str, target: str, steps: int = 2, n_train: int = 200) -> Path:
    """A tiny run of the reversal task between two named languages (root/models/<source>-<target>), for servers
    and benchmarks of many models."""
    from transformer_mt import train

    data = write_reverse_corpus(root / f"data-{source}-{target}", n_train=n_train, n_valid=5, n_test=5)
    for split in ("train", "valid", "test"):
        (data / f"{split}.src").rename(data / f"{split}.{source}")
        (data / f"{split}.tgt").rename(data / f"{split}.{target}")
    config = tiny_config(data, max_steps=steps, validate_every=steps)
    config.data.src_lang, config.data.tgt_lang = source, target
    run = root / "models" / f"{source}-{target}"
    train(config, run, show_progress=False)
    return run
