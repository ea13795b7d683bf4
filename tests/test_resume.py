"""Exact resume, signals and kills during training."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml
from conftest import start_training, tiny_config, wait_for, write_reverse_corpus

from transformer_mt import train
from transformer_mt.checkpoint import load_checkpoint


def train_losses(run_dir):
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in records if r["type"] == "train"}


def test_interrupted_and_resumed_run_reproduces_the_same_losses(tmp_path):
    data = write_reverse_corpus(tmp_path / "data", n_train=300, n_valid=10, n_test=10)
    straight = train(tiny_config(data, max_steps=8, validate_every=4), tmp_path / "straight", show_progress=False)
    assert straight["step"] == 8
    # Same config, stopped after 3 updates (mid-epoch), then resumed to 8.
    train(tiny_config(data, max_steps=3, validate_every=4), tmp_path / "resumed", show_progress=False)
    resumed = train(tiny_config(data, max_steps=8, validate_every=4), tmp_path / "resumed", show_progress=False)
    assert resumed["step"] == 8
    expected, got = train_losses(tmp_path / "straight"), train_losses(tmp_path / "resumed")
    assert sorted(got) == list(range(1, 9))
    assert got == expected  # bit-identical on CPU


def write_config(tmp_path, data, **training):
    config = {
        "data": {"root": str(data), "src_lang": "src", "tgt_lang": "tgt"},
        "tokenizer": {"model_type": "word", "vocab_size": 34},
        "model": {"d_model": 32, "num_heads": 2, "num_encoder_layers": 1, "num_decoder_layers": 1, "ffn_dim": 64},
        "training": {"batch_tokens": 300, "lr": 0.001, "warmup_steps": 10, "log_every": 1, "num_threads": 1,
                     **training},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_saves_a_checkpoint_and_says_how_to_resume(tmp_path, signum):
    data = write_reverse_corpus(tmp_path / "data", n_train=300, n_valid=5, n_test=5)
    config = write_config(tmp_path, data, max_steps=100000, validate_every=100000)
    run = tmp_path / "run"
    proc = start_training(config, run)
    wait_for(lambda: (run / "metrics.jsonl").exists() and len((run / "metrics.jsonl").read_text().splitlines()) >= 3)
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert "--resume" in stderr
    step = load_checkpoint(run / "checkpoint_last.pt")["step"]
    assert step >= 3
    # Resume runs on from that step to the new budget.
    finish = subprocess.run([sys.executable, "-m", "transformer_mt.cli", "train", "--config", str(config),
                             "--output-dir", str(run), "--resume", "--set", f"training.max_steps={step + 2}"],
                            capture_output=True, text=True, timeout=120)
    assert finish.returncode == 0, finish.stderr
    assert load_checkpoint(run / "checkpoint_last.pt")["step"] == step + 2


def test_sigkill_at_any_moment_leaves_a_readable_checkpoint(tmp_path):
    data = write_reverse_corpus(tmp_path / "data", n_train=300, n_valid=5, n_test=5)
    # A checkpoint after every update, so kills land during checkpoint writes too.
    config = write_config(tmp_path, data, max_steps=100000, validate_every=1, keep_last_n=1)
    run = tmp_path / "run"
    for delay in (0.0, 0.13, 0.37):
        proc = start_training(config, run)
        wait_for(lambda: (run / "checkpoint_last.pt").exists())
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate()
        state = load_checkpoint(run / "checkpoint_last.pt")  # never half-written
        assert state["step"] >= 1
    leftovers = [p.name for p in run.iterdir() if ".tmp" in p.name]
    # A kill can leave a temporary file behind, never a damaged checkpoint; it is not read.
    assert all(name.startswith(".checkpoint") for name in leftovers)


def test_different_config_over_existing_run_is_refused(tmp_path):
    data = write_reverse_corpus(tmp_path / "data", n_train=100, n_valid=5, n_test=5)
    train(tiny_config(data, max_steps=2, validate_every=2), tmp_path / "run", show_progress=False)
    changed = tiny_config(data, max_steps=2, validate_every=2, lr=0.5)
    from transformer_mt.errors import TransformerMTError

    with pytest.raises(TransformerMTError, match=r"different config \(training.lr: 0.003 -> 0.5\).*--overwrite"):
        train(changed, tmp_path / "run", show_progress=False)
    summary = train(changed, tmp_path / "run", overwrite=True, show_progress=False)
    assert summary["step"] == 2


def test_exact_resume_with_ema_subword_sampling_and_weighted_corpora(tmp_path):
    """The same property as the first test with the issue-27 options on: the corpus mix's draw, the sampled
    segmentations and the moving average all continue exactly where the interrupted run stopped."""
    import torch

    from transformer_mt.config import config_from_dict

    data = write_reverse_corpus(tmp_path / "data", n_train=300, n_valid=10, n_test=10)
    other = write_reverse_corpus(tmp_path / "other", n_train=80, n_valid=1, n_test=1, seed=3)
    for lang in ("src", "tgt"):
        (data / f"bt.{lang}").write_bytes((other / f"train.{lang}").read_bytes())

    def config(max_steps):
        raw = tiny_config(data, max_steps=max_steps, validate_every=4, ema_decay=0.9).to_dict()
        raw["tokenizer"].update(model_type="bpe", vocab_size=60)
        raw["data"].update(subword_alpha=0.2, unpunctuated_copies=0.3, train_corpora=[
            {"prefix": "train", "weight": 2.0}, {"prefix": "bt", "weight": 1.0, "tag": "<BT>"}])
        return config_from_dict(raw)

    train(config(8), tmp_path / "straight", show_progress=False)
    train(config(3), tmp_path / "resumed", show_progress=False)
    train(config(8), tmp_path / "resumed", show_progress=False)
    expected, got = train_losses(tmp_path / "straight"), train_losses(tmp_path / "resumed")
    assert sorted(got) == list(range(1, 9))
    assert got == expected
    straight, resumed = (load_checkpoint(tmp_path / run / "checkpoint_last.pt") for run in ("straight", "resumed"))
    for key in ("model", "raw_model"):  # the moving average and the trained weights
        assert all(torch.equal(straight[key][name], resumed[key][name]) for name in straight[key])
