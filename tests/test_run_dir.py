"""A run directory belongs to one training at a time, and training touches only its own files."""

import errno
import json
import os
import signal

import pytest
import torch
import yaml
from conftest import assert_clean_error, run_cli, start_training, tiny_config, wait_for, write_reverse_corpus

from transformer_mt import checkpoint as ckpt
from transformer_mt import train
from transformer_mt.errors import TransformerMTError
from transformer_mt.training.rundir import RunLock


@pytest.fixture
def setup(tmp_path):
    data = write_reverse_corpus(tmp_path / "data", n_train=200, n_valid=5, n_test=5)
    config = tiny_config(data, max_steps=2, validate_every=2)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config.to_dict()), encoding="utf-8")
    return data, config, path


def metric_steps(run, kind="train"):
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["step"] for r in records if r["type"] == kind]


def test_two_concurrent_trainings_on_one_directory(tmp_path, setup):
    data, config, config_path = setup
    run = tmp_path / "run"
    # No step limit: the first training must still hold the directory when the second starts, however fast
    # the machine; it is stopped by SIGTERM afterwards.
    first = start_training(config_path, run, "--set", "training.max_steps=100000", "--set",
                           "training.validate_every=30")
    wait_for(lambda: (run / ".lock").exists() and (run / ".lock").read_text().startswith(str(first.pid)))
    second = run_cli("train", "--config", config_path, "--output-dir", run, "--set", "training.max_steps=100000",
                     "--set", "training.validate_every=30")
    line = assert_clean_error(second)
    assert str(run) in line and f"PID {first.pid}" in line and "in use" in line
    assert first.poll() is None, "the first training ended before the second one was refused"
    wait_for(lambda: (run / "metrics.jsonl").exists() and len(metric_steps(run)) >= 3)
    first.send_signal(signal.SIGTERM)
    _, stderr = first.communicate(timeout=300)
    assert first.returncode == 130, stderr
    saved = ckpt.load_checkpoint(run / "checkpoint_last.pt")["step"]
    assert metric_steps(run) == list(range(1, saved + 1))  # the first run was not disturbed


def test_average_waits_for_no_one_and_refuses_a_locked_run(tmp_path, setup):
    data, config, _ = setup
    run = tmp_path / "run"
    train(tiny_config(data, max_steps=4, validate_every=2), run, show_progress=False)
    with RunLock(run, "training"):
        line = assert_clean_error(run_cli("average", "--model", run, "--last", "2"))
        assert f"PID {os.getpid()}" in line and "in use" in line
        with pytest.raises(TransformerMTError, match="in use by another process"):
            train(tiny_config(data, max_steps=6, validate_every=2), run, show_progress=False)
    assert run_cli("average", "--model", run, "--last", "2").returncode == 0  # released


def test_sigkill_leaves_no_stale_lock_and_no_repeated_log_records(tmp_path, setup):
    data, config, config_path = setup
    run = tmp_path / "run"
    proc = start_training(config_path, run, "--set", "training.max_steps=100000", "--set",
                          "training.validate_every=3")
    wait_for(lambda: (run / "checkpoint_last.pt").exists() and len(metric_steps(run)) >= 5)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    saved = ckpt.load_checkpoint(run / "checkpoint_last.pt")["step"]
    # A temporary file as an interrupted checkpoint write leaves it.
    (run / f".checkpoint_last.pt.tmp-{proc.pid}").write_bytes(b"half a checkpoint")  # as older versions named it
    (run / ".checkpoint_last.pt.k2x8_q0w.tmp").write_bytes(b"half a checkpoint")  # as safe_files names it
    result = run_cli("train", "--config", config_path, "--output-dir", run, "--set", f"training.max_steps={saved + 4}",
                     "--set", "training.validate_every=3")
    assert result.returncode == 0, result.stderr
    steps = metric_steps(run)
    assert steps == list(range(1, saved + 5))  # every step once, in order
    valid = metric_steps(run, "valid")
    assert len(valid) == len(set(valid))
    log_lines = [line for line in (run / "train.log").read_text().splitlines() if "validation at step" in line]
    assert len(log_lines) == len(set(line.split(" INFO ")[1] for line in log_lines))
    assert not list(run.glob(".checkpoint_*.tmp-*")) and not list(run.glob(".checkpoint_*.tmp"))
    assert "left by an interrupted write" in (run / "train.log").read_text()


def test_records_written_after_the_last_checkpoint_are_cut_on_resume(tmp_path, setup):
    data, config, _ = setup
    run = tmp_path / "run"
    train(tiny_config(data, max_steps=4, validate_every=2), run, show_progress=False)
    # What a SIGKILL after step 5 leaves: records of steps the resumed run trains again, and half a line.
    with open(run / "metrics.jsonl", "a") as handle:
        handle.write('{"type": "train", "step": 5, "loss": 9.9}\n{"type": "valid", "step": 6, "bl')
    with open(run / "train.log", "a") as handle:
        handle.write("2026-01-01 00:00:00,000 INFO validation at step 6: from the killed session\n")
    train(tiny_config(data, max_steps=6, validate_every=2), run, show_progress=False)
    assert metric_steps(run) == [1, 2, 3, 4, 5, 6]
    assert metric_steps(run, "valid") == [2, 4, 6]
    log_text = (run / "train.log").read_text()
    assert "from the killed session" not in log_text
    assert "metrics.jsonl: removed 1 lines written after checkpoint_last.pt" in log_text


def test_a_folder_that_is_not_a_run_is_never_written_to(tmp_path, setup):
    data, config, config_path = setup
    folder = tmp_path / "my-project"
    (folder / "cache").mkdir(parents=True)
    (folder / "cache" / "keep.bin").write_bytes(b"user data")
    (folder / "config.yaml").write_text("my: own config\n")
    before = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    for extra in ([], ["--overwrite"]):
        line = assert_clean_error(run_cli("train", "--config", config_path, "--output-dir", folder, *extra))
        assert "is not a transformer-mt run directory" in line and "config.yaml" in line
    after = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    assert after == before


def test_overwrite_deletes_only_the_runs_own_files(tmp_path, setup):
    data, config, _ = setup
    run = tmp_path / "run"
    train(config, run, show_progress=False)
    (run / "notes.txt").write_text("why I ran this")
    (run / "plots").mkdir()
    (run / "plots" / "curve.png").write_bytes(b"png")
    changed = tiny_config(data, max_steps=2, validate_every=2, lr=0.01)
    with pytest.raises(TransformerMTError, match="different config"):
        train(changed, run, show_progress=False)
    train(changed, run, overwrite=True, show_progress=False)
    assert (run / "notes.txt").read_text() == "why I ran this"
    assert (run / "plots" / "curve.png").read_bytes() == b"png"
    assert ckpt.load_checkpoint(run / "checkpoint_last.pt")["config"]["training"]["lr"] == 0.01
    assert metric_steps(run) == [1, 2]  # the earlier run's log went with it


@pytest.mark.parametrize("content", ["training: [unclosed\n", "- a list\n- not a config\n", "\xff"])
def test_a_damaged_config_yaml_does_not_block_resuming(tmp_path, setup, content):
    data, config, config_path = setup
    run = tmp_path / "run"
    train(config, run, show_progress=False)
    (run / "config.yaml").write_bytes(content.encode("latin-1"))
    result = run_cli("train", "--config", config_path, "--output-dir", run, "--set", "training.max_steps=4")
    assert result.returncode == 0, result.stderr
    assert ckpt.load_checkpoint(run / "checkpoint_last.pt")["step"] == 4
    assert yaml.safe_load((run / "config.yaml").read_text())["training"]["max_steps"] == 4


def test_a_damaged_config_yaml_without_checkpoint_rebuilds_the_tokenizer(tmp_path, setup):
    data, config, config_path = setup
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text('{"tool": "transformer-mt"}')
    (run / "config.yaml").write_text("- a list\n")
    (run / "spm.model").write_bytes(b"a tokenizer of unknown origin")
    summary = train(config, run, show_progress=False)
    assert summary["step"] == 2
    assert "rebuilding the run's tokenizer" in (run / "train.log").read_text()


def test_output_dir_problems_are_one_clear_line(tmp_path, setup):
    data, config, config_path = setup
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    assert "is a file" in assert_clean_error(run_cli("train", "--config", config_path, "--output-dir", a_file))
    line = assert_clean_error(run_cli("train", "--config", config_path, "--output-dir", a_file / "run"))
    assert "cannot create output directory" in line and "Not a directory" in line


def test_a_read_only_run_directory_is_reported(tmp_path, setup, monkeypatch):
    data, config, _ = setup
    run = tmp_path / "run"
    run.mkdir()
    real_open = open

    def read_only(path, *args, **kwargs):
        mode = args[0] if args else kwargs.get("mode", "r")
        if str(path).startswith(str(run)) and any(m in mode for m in "wa+"):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, *args, **kwargs)

    real_os_open = os.open

    def read_only_os_open(path, flags, *args, dir_fd=None, **kwargs):  # how safe_files opens run files
        # safe_files opens a name relative to its folder's descriptor: where that is tells the file
        where = str(path) if dir_fd is None else os.path.join(os.readlink(f"/proc/self/fd/{dir_fd}"), path)
        if where.startswith(str(run)) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise OSError(errno.EROFS, "Read-only file system", where)
        return real_os_open(path, flags, *args, dir_fd=dir_fd, **kwargs)

    monkeypatch.setattr("builtins.open", read_only)
    monkeypatch.setattr("os.open", read_only_os_open)
    with pytest.raises(TransformerMTError, match="not writable.*Read-only file system"):
        train(config, run, show_progress=False)


def test_disk_full_during_a_checkpoint_write_keeps_the_previous_one(tmp_path, monkeypatch):
    path = tmp_path / "ck.pt"
    good = {"format_version": ckpt.FORMAT_VERSION, "config": {}, "model": {"w": torch.ones(2)}}
    ckpt.atomic_save(good, path)

    def full(obj, handle, *args, **kwargs):  # what torch.save raises when the disk fills up
        handle.write(b"partial")
        raise RuntimeError("[enforce fail at inline_container.cc:626] . unexpected pos 64 vs 0\nmore")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(TransformerMTError, match="could not write checkpoint .*unexpected pos.*unchanged"):
        ckpt.atomic_save(good, path)

    def erofs(*args, **kwargs):  # and a read-only file system, where even removing the temp file fails
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr("pathlib.Path.unlink", erofs)
    with pytest.raises(TransformerMTError, match="could not write checkpoint"):
        ckpt.atomic_save(good, path)
    monkeypatch.undo()
    assert torch.equal(ckpt.load_checkpoint(path)["model"]["w"], torch.ones(2))


def test_a_log_that_is_not_the_checkpoints_is_left_alone(tmp_path, setup):
    data, config, _ = setup
    run = tmp_path / "run"
    train(tiny_config(data, max_steps=4, validate_every=2), run, show_progress=False)
    # Records rewritten since the checkpoint (or a log from another machine): cutting at the recorded
    # byte count would split a record in two.
    text = (run / "metrics.jsonl").read_text().replace('"type"', '"type" ')
    (run / "metrics.jsonl").write_text(text + '{"type": "train", "step": 5}\n')
    train(tiny_config(data, max_steps=6, validate_every=2), run, show_progress=False)
    for line in (run / "metrics.jsonl").read_text().splitlines():
        json.loads(line)  # every record whole
    assert "does not match checkpoint_last.pt" in (run / "train.log").read_text()


def test_mistakes_are_reported_before_overwrite_deletes_anything(tmp_path, setup):
    data, config, config_path = setup
    run = tmp_path / "run"
    train(config, run, show_progress=False)
    before = sorted(p.name for p in run.iterdir())
    assert_clean_error(run_cli("train", "--config", config_path, "--output-dir", run, "--overwrite", "--resume"),
                       "--resume continues a run and --overwrite deletes it")
    assert_clean_error(run_cli("train", "--config", config_path, "--output-dir", run, "--overwrite",
                               "--set", "data.root=/no/such/folder"), "does not exist")
    assert sorted(p.name for p in run.iterdir()) == before


def test_step_checkpoints_without_checkpoint_last_are_not_overwritten(tmp_path, setup):
    data, config, _ = setup
    run = tmp_path / "run"
    train(config, run, show_progress=False)
    (run / "checkpoint_last.pt").unlink()
    best = (run / "checkpoint_best.pt").read_bytes()
    with pytest.raises(TransformerMTError, match="holds checkpoints .* but no checkpoint_last.pt"):
        train(config, run, show_progress=False)
    assert (run / "checkpoint_best.pt").read_bytes() == best
    assert train(config, run, overwrite=True, show_progress=False)["step"] == 2


def test_a_users_own_lock_file_makes_a_folder_not_a_run(tmp_path, setup):
    data, config, _ = setup
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / ".lock").write_text("my notes\n")
    with pytest.raises(TransformerMTError, match="not a transformer-mt run directory"):
        train(config, folder, show_progress=False)
    assert (folder / ".lock").read_text() == "my notes\n"


def test_failures_before_and_after_training_release_the_lock(tmp_path, setup):
    from transformer_mt.training.trainer import Trainer

    data, config, _ = setup
    run = tmp_path / "run"
    with pytest.raises(TransformerMTError, match="training has no end"):
        train(tiny_config(data, max_steps=0, validate_every=2), run, show_progress=False)
    trainer = Trainer(config, run, show_progress=False)
    trainer.run()
    other = Trainer(tiny_config(data, max_steps=4, validate_every=2), run, show_progress=False)  # lock was free
    with pytest.raises(TransformerMTError, match="has ended"):
        trainer.run()  # a finished Trainer never trains again without the lock
    assert other.run()["step"] == 4


def test_a_damaged_run_directory_is_one_error_line(tmp_path, setup):
    data, config, config_path = setup
    run = tmp_path / "run"
    train(config, run, show_progress=False)
    (run / "train.log").unlink()
    (run / "train.log").mkdir()
    assert_clean_error(run_cli("train", "--config", config_path, "--output-dir", run, "--set", "training.max_steps=4"),
                       "is damaged or not writable", "train.log")
