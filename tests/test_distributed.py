"""Data-parallel training with torchrun: 2 CPU processes (gloo) against 1 process.

Every torchrun here has a timeout, so a hang (ranks waiting in a collective another never
joins) fails the test instead of stalling CI.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import assert_clean_error, run_cli, wait_for, write_reverse_corpus

from transformer_mt.checkpoint import load_checkpoint
from transformer_mt.training.distributed import shard_batches

TIMEOUT = 240


def torchrun(*args, nproc: int = 2) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            "-m", "transformer_mt", *map(str, args)]


def run_torchrun(*args, nproc: int = 2) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(torchrun(*args, nproc=nproc), capture_output=True, text=True, timeout=TIMEOUT, env=env)


def write_config(tmp_path: Path, data: Path, **training) -> Path:
    config = {
        "data": {"root": str(data), "src_lang": "src", "tgt_lang": "tgt", "valid_prefix": "valid",
                 "test_prefix": "test", "max_len": 64},
        "tokenizer": {"model_type": "word", "vocab_size": 34},
        # No dropout: with it, 2 ranks draw other masks than 1 process would.
        "model": {"d_model": 32, "num_heads": 2, "num_encoder_layers": 1, "num_decoder_layers": 1, "ffn_dim": 64,
                  "dropout": 0.0},
        "training": {"batch_tokens": 300, "lr": 0.003, "warmup_steps": 5, "log_every": 1, "num_threads": 1,
                     **training},
        "decoding": {"beam_size": 2, "valid_beam_size": 1, "batch_size": 32},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_shards_have_equal_lengths_and_cover_every_batch():
    for count in range(1, 12):
        batches = [np.array([i]) for i in range(count)]
        for world_size in (1, 2, 3, 4):
            shards = [shard_batches(batches, rank, world_size) for rank in range(world_size)]
            assert len({len(shard) for shard in shards}) == 1, (count, world_size)
            seen = {int(b[0]) for shard in shards for b in shard}
            assert seen == set(range(count))
            assert sum(len(shard) for shard in shards) - count < world_size  # padding: less than one round


def test_two_processes_equal_one_process_with_accumulation(tmp_path):
    """2 ranks x 1 batch per update = 1 process x 2 batches per update, on the same batches, to 1e-6."""
    data = write_reverse_corpus(tmp_path / "data", n_train=600, n_valid=10, n_test=10)
    config = write_config(tmp_path, data, max_steps=5, validate_every=5)
    two = run_torchrun("train", "--config", config, "--output-dir", tmp_path / "two")
    assert two.returncode == 0, two.stderr
    one = run_cli("train", "--config", config, "--output-dir", tmp_path / "one", "--set", "training.accumulate=2")
    assert one.returncode == 0, one.stderr
    a, b = load_checkpoint(tmp_path / "one" / "checkpoint_last.pt"), load_checkpoint(tmp_path / "two" / "checkpoint_last.pt")
    assert a["step"] == b["step"] == 5
    for name, tensor in a["model"].items():
        torch.testing.assert_close(b["model"][name], tensor, rtol=0, atol=1e-6)
    losses = lambda run: [r["loss"] for r in records(run) if r["type"] == "train"]  # noqa: E731
    assert losses(tmp_path / "two") == pytest.approx(losses(tmp_path / "one"), rel=1e-6)
    assert b["data_position"]["world_size"] == 2 and len(b["rng_per_rank"]) == 2
    assert "data-parallel: world size 2, backend gloo" in (tmp_path / "two" / "train.log").read_text()


def test_uneven_shards_finish_and_rank_0_alone_writes_one_record_per_event(tmp_path):
    # A batch count that does not divide by 2 (checked below), over 2 epochs with accumulation.
    data = write_reverse_corpus(tmp_path / "data", n_train=450, n_valid=10, n_test=10)
    config = write_config(tmp_path, data, max_epochs=2, accumulate=2, validate_every=3)
    # transformer-mt's own launcher (torchrun --standalone, called in-process)
    result = run_cli("train", "--config", config, "--output-dir", tmp_path / "run", "--nproc-per-node", "2",
                     timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr
    assert "torch.distributed" not in result.stderr and "OMP_NUM_THREADS" not in result.stderr, result.stderr
    log_text = (tmp_path / "run" / "train.log").read_text()
    assert "epoch 2 done" in log_text and log_text.count("epoch 1 done") == 1
    assert re.search(r"epoch 1: \d+ batches, \d+ per rank \(1 repeated to even out the ranks\)", log_text), log_text
    state = load_checkpoint(tmp_path / "run" / "checkpoint_last.pt")
    assert state["step"] == 2 * 3  # 11 batches: 6 per rank, 3 updates of 2 per epoch
    rows = records(tmp_path / "run")
    train_steps = [r["step"] for r in rows if r["type"] == "train"]
    assert train_steps == list(range(1, state["step"] + 1))  # one record per update, none twice
    valid_steps = [r["step"] for r in rows if r["type"] == "valid"]
    assert len(valid_steps) == len(set(valid_steps)) >= 2


def _worker_pids(launcher_pid: int) -> dict[int, int]:
    """rank -> pid of the workers torchrun started."""
    pids = {}
    for child in subprocess.run(["pgrep", "-P", str(launcher_pid)], capture_output=True, text=True).stdout.split():
        try:
            environ = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        for item in environ:
            if item.startswith(b"RANK="):
                pids[int(item[5:])] = int(child)
    return pids


def test_sigterm_to_one_rank_stops_all_at_one_update_and_the_run_resumes(tmp_path):
    data = write_reverse_corpus(tmp_path / "data", n_train=600, n_valid=10, n_test=10)
    config = write_config(tmp_path, data, max_steps=100000, validate_every=100000)
    run = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    launcher = subprocess.Popen(torchrun("train", "--config", config, "--output-dir", run), env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: (run / "metrics.jsonl").exists() and len(records(run)) >= 3, timeout=TIMEOUT)
        workers = _worker_pids(launcher.pid)
        assert sorted(workers) == [0, 1]
        os.kill(workers[1], signal.SIGTERM)  # rank 1 only: rank 0 must learn of it and save
        _, stderr = launcher.communicate(timeout=TIMEOUT)
    finally:
        if launcher.poll() is None:
            launcher.kill()
    assert "SIGTERM received" in stderr and "checkpoint saved" in stderr, stderr
    assert "Resume with: torchrun <the same --nnodes/--nproc_per_node: 2 processes> -m transformer_mt" in stderr
    state = load_checkpoint(run / "checkpoint_last.pt")
    step = state["step"]
    assert step >= 3 and state["data_position"]["world_size"] == 2
    assert [r["step"] for r in records(run) if r["type"] == "train"] == list(range(1, step + 1))

    # Another number of processes is refused with a clear message, before anything changes.
    one = run_cli("train", "--config", config, "--output-dir", run, "--resume")
    assert one.returncode == 2 and "written by 2 training process(es) and this run has 1" in one.stderr

    resumed = run_torchrun("train", "--config", config, "--output-dir", run, "--resume",
                           "--set", f"training.max_steps={step + 3}")
    assert resumed.returncode == 0, resumed.stderr
    assert load_checkpoint(run / "checkpoint_last.pt")["step"] == step + 3
    assert [r["step"] for r in records(run) if r["type"] == "train"] == list(range(1, step + 4))


def test_two_process_demo_run_learns_like_one_process(tmp_path):
    """The reversal task: 2 processes x 150 updates learn as much as 1 process with accumulation 2 (dropout
    on, so the ranks' masks differ from the single process's and the runs are not identical)."""
    data = write_reverse_corpus(tmp_path / "data", n_train=2000, n_valid=50, n_test=10)
    config = write_config(tmp_path, data, max_steps=150, validate_every=150, batch_tokens=600, lr=0.005,
                          warmup_steps=30)
    raw = yaml.safe_load(config.read_text())
    raw["model"]["dropout"] = 0.1
    config.write_text(yaml.safe_dump(raw))
    two = run_torchrun("train", "--config", config, "--output-dir", tmp_path / "two")
    assert two.returncode == 0, two.stderr
    one = run_cli("train", "--config", config, "--output-dir", tmp_path / "one", "--set", "training.accumulate=2")
    assert one.returncode == 0, one.stderr
    bleu = {name: [r for r in records(tmp_path / name) if r["type"] == "valid"][-1]["bleu"] for name in ("one", "two")}
    assert bleu["one"] > 10 and bleu["two"] > 10, bleu  # from ~0 after the first updates
    assert abs(bleu["two"] - bleu["one"]) < 6, bleu


def test_a_config_mistake_under_torchrun_is_printed_once(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("model:\n  d_modle: 64\n")
    result = run_torchrun("train", "--config", config, "--output-dir", tmp_path / "run")
    assert result.returncode != 0
    assert result.stderr.count("error: ") == 1 and "did you mean 'model.d_model'" in result.stderr, result.stderr


def test_own_launcher_checks_the_config_once_and_keeps_torchruns_summary_back(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("model:\n  d_modle: 64\n")
    mistake = run_cli("train", "--config", config, "--output-dir", tmp_path / "run", "--nproc-per-node", "2")
    assert assert_clean_error(mistake, "did you mean 'model.d_model'") == mistake.stderr.strip()  # the only line
    assert not (tmp_path / "run").exists()  # refused before any process started

    # A mistake only the ranks find (the output directory is a file): rank 0 says it, nothing else is printed.
    data = write_reverse_corpus(tmp_path / "data", n_train=50, n_valid=5, n_test=5)
    config = write_config(tmp_path, data, max_steps=2)
    (tmp_path / "a_file").write_text("")
    failed = run_cli("train", "--config", config, "--output-dir", tmp_path / "a_file", "--nproc-per-node", "2",
                     timeout=TIMEOUT)
    assert_clean_error(failed, "a_file")
    assert failed.stderr.count("error: ") == 1 and "ChildFailedError" not in failed.stderr, failed.stderr
    assert_clean_error(run_cli("train", "--config", config, "--nproc-per-node", "0"), "--nproc-per-node")
    assert_clean_error(run_cli("train", "--config", config, "--nproc-per-node", "100000"), "--nproc-per-node 100000",
                       "at most")
