"""The findings of the third round (issue "safe by construction"), each with the test that failed before the
resolver by descriptor (safe_files._resolve): a symlink swapped in while ``translate --output`` writes a
hard-linked file, commands that created folders through another user's link earlier in the path, and a FIFO of
another user given as ``--output`` that blocked root forever."""

from __future__ import annotations

import ctypes
import os
import signal
import stat
import time
from pathlib import Path

import pytest
import yaml
from conftest import assert_clean_error, run_cli, tiny_config, write_reverse_corpus

from transformer_mt import safe_files
from transformer_mt.errors import TransformerMTError
from transformer_mt.safe_files import write_output, write_run_file

IS_ROOT = os.geteuid() == 0
OTHER_UID = 54321  # a user id that owns nothing here: the "other user" who plants links, FIFOs and swaps
needs_root = pytest.mark.skipif(not IS_ROOT, reason="needs root: files, links and a process of another user")

RENAME_EXCHANGE = 2  # linux/fs.h


def _victim(folder: Path) -> Path:
    """A file only root may read or write, standing for /etc/shadow."""
    victim = folder / "victim"
    victim.write_text("secret\n")
    victim.chmod(0o600)
    return victim


def _unchanged(victim: Path, before: os.stat_result) -> bool:
    now = os.lstat(victim)
    return (victim.read_text() == "secret\n" and stat.S_ISREG(now.st_mode)
            and (now.st_ino, now.st_uid, stat.S_IMODE(now.st_mode)) == (before.st_ino, 0, 0o600))


def _foreign_folder_link(tmp_path: Path) -> tuple[Path, Path]:
    """(root's own folder, a shared folder holding ``link``: another user's link to root's folder)."""
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    (shared / "link").symlink_to(home)
    os.lchown(shared / "link", OTHER_UID, OTHER_UID)
    return home, shared


# --- Security 1: translate --output F, F another user's hard-linked file, swapped for a link in a loop -------

def _swap_in_a_loop(folder_fd: int, first: bytes, second: bytes) -> None:
    """The other user's side of the race (in a forked child): exchange two names as fast as it can."""
    libc = ctypes.CDLL(None, use_errno=True)
    try:
        os.setgid(OTHER_UID)
        os.setuid(OTHER_UID)
        while True:
            libc.renameat2(folder_fd, first, folder_fd, second, RENAME_EXCHANGE)
    finally:
        os._exit(0)


@needs_root
@pytest.mark.parametrize("links", [2, 1], ids=["hard-linked, written in place", "replaced atomically"])
def test_a_link_swapped_in_while_an_output_is_written_never_reaches_the_victim(tmp_path, links):
    libc = ctypes.CDLL(None, use_errno=True)
    if not hasattr(libc, "renameat2"):
        pytest.skip("this C library has no renameat2")
    victim = _victim(tmp_path)
    before = os.lstat(victim)
    shared = tmp_path / "shared"  # the other user's folder
    shared.mkdir()
    out = shared / "out.txt"
    out.write_text("theirs\n")
    if links == 2:
        os.link(out, shared / "second-name")
    (shared / "swap").symlink_to(victim)
    for path in (shared, out, shared / "swap"):
        os.lchown(path, OTHER_UID, OTHER_UID)
    folder_fd = os.open(shared, os.O_RDONLY | os.O_DIRECTORY)  # opened for the child: root's tmp_path is closed
    probe = libc.renameat2(folder_fd, b"out.txt", folder_fd, b"swap", RENAME_EXCHANGE)
    if probe != 0:
        os.close(folder_fd)
        pytest.skip(f"renameat2(RENAME_EXCHANGE) is not supported here (errno {ctypes.get_errno()})")
    child = os.fork()
    if child == 0:
        _swap_in_a_loop(folder_fd, b"out.txt", b"swap")
    os.close(folder_fd)
    outcomes = {"written": 0, "refused": 0}
    try:
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline:
            try:
                write_output(out, "the translation\n")
                outcomes["written"] += 1
            except TransformerMTError as exc:
                assert "another user" in str(exc) or "changed while" in str(exc) or "replaced by a symbolic link" \
                    in str(exc), exc
                outcomes["refused"] += 1
            assert _unchanged(victim, before), f"the victim was written after {outcomes}"
    finally:
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
    assert _unchanged(victim, before)
    assert outcomes["written"] + outcomes["refused"] > 50, outcomes  # the race ran


# --- Security 2: train/import/plot followed another user's link earlier in the path ------------------------

@needs_root
def test_train_output_dir_through_a_foreign_folder_link_is_refused(tmp_path):
    home, shared = _foreign_folder_link(tmp_path)
    data = write_reverse_corpus(tmp_path / "data", n_train=50, n_valid=5, n_test=5)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(tiny_config(data, max_steps=1, validate_every=1).to_dict()), encoding="utf-8")
    result = run_cli("train", "--config", config, "--output-dir", shared / "link" / "run")
    assert_clean_error(result, "--output-dir", "belongs to another user")
    assert list(home.iterdir()) == []


@needs_root
def test_import_output_dir_through_a_foreign_folder_link_is_refused(tmp_path):
    from transformer_mt.interop.hf_files import write_run_dir

    home, shared = _foreign_folder_link(tmp_path)
    hf_dir = tmp_path / "hf"
    hf_dir.mkdir()
    result = run_cli("import", hf_dir, "--output-dir", shared / "link" / "model")
    assert_clean_error(result, "--output-dir", "belongs to another user")
    with pytest.raises(TransformerMTError, match="belongs to another user"):  # and at the write itself
        write_run_dir(shared / "link" / "model", lambda folder: write_run_file(folder / "run.json", "{}"))
    assert list(home.iterdir()) == []


@needs_root
def test_plot_output_through_a_foreign_folder_link_is_refused(tmp_path, small_run):
    pytest.importorskip("matplotlib")
    _, _, run = small_run
    home, shared = _foreign_folder_link(tmp_path)
    result = run_cli("plot", "--model", run, "--output", shared / "link" / "plots")
    assert_clean_error(result, "--output", "belongs to another user")
    assert list(home.iterdir()) == []


# --- Hang: an --output that is a FIFO planted by another user ----------------------------------------------

@needs_root
def test_a_fifo_of_another_user_as_output_is_refused_without_hanging(tmp_path, small_run):
    _, _, run = small_run
    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    os.chown(fifo, OTHER_UID, OTHER_UID)
    result = run_cli("translate", "--model", run, "--output", fifo, "ba de", timeout=120)
    assert_clean_error(result, "--output", "belongs to another user")
    with pytest.raises(TransformerMTError, match="belongs to another user"):
        write_output(fifo, "x")
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


@needs_root
def test_a_device_of_another_user_is_not_written(tmp_path):
    device = tmp_path / "null"
    try:
        os.mknod(device, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("this container may not make device nodes (mknod EPERM)")
    os.chown(device, OTHER_UID, OTHER_UID)
    with pytest.raises(TransformerMTError, match="belongs to another user"):
        write_output(device, "x")


def test_an_own_fifo_nobody_reads_is_refused_not_waited_on_forever(tmp_path, monkeypatch):
    monkeypatch.setattr(safe_files, "FIFO_READER_WAIT_S", 0.3)
    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    started = time.monotonic()
    with pytest.raises(TransformerMTError, match="no process opened for reading"):
        write_output(fifo, "x")
    assert time.monotonic() - started < 30


# --- the resolver itself -----------------------------------------------------------------------------------

def test_run_files_are_written_by_descriptor_below_an_own_link(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "mine").symlink_to(tmp_path / "real")  # the user's own link on the way is followed
    write_run_file(tmp_path / "mine" / "run.json", "{}")
    assert (tmp_path / "real" / "run.json").read_text() == "{}"
    assert safe_files.make_folders(tmp_path / "mine" / "a" / "b") == tmp_path / "mine" / "a" / "b"
    assert (tmp_path / "real" / "a" / "b").is_dir()


def test_a_link_loop_is_one_clear_error(tmp_path):
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    for path in (tmp_path / "a", tmp_path / "a" / "out.txt"):
        with pytest.raises(TransformerMTError, match="symbolic link loop"):
            write_output(path, "x")


# --- a probe: every kind of write while another user swaps a folder, a file, a link and a FIFO ----------------

PROBE_SECONDS = float(os.environ.get("TRANSFORMER_MT_PROBE_SECONDS", "4"))  # set it to run the probe for minutes


def _swap_pairs_in_a_loop(folder_fd: int, pairs: list[tuple[bytes, bytes]]) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    try:
        os.setgid(OTHER_UID)
        os.setuid(OTHER_UID)
        while True:
            for first, second in pairs:
                libc.renameat2(folder_fd, first, folder_fd, second, RENAME_EXCHANGE)
    finally:
        os._exit(0)


@needs_root
def test_a_probe_swapping_folders_links_and_fifos_finds_no_write_outside_and_no_hang(tmp_path):
    libc = ctypes.CDLL(None, use_errno=True)
    if not hasattr(libc, "renameat2"):
        pytest.skip("this C library has no renameat2")
    home = tmp_path / "home"  # root's folder: nothing may appear in it
    home.mkdir(mode=0o700)
    victim = _victim(home)
    before = os.lstat(victim)
    shared = tmp_path / "shared"  # the other user's folder, where root writes
    shared.mkdir()
    (shared / "dir").mkdir()
    (shared / "dir" / "out.txt").write_text("theirs\n")
    os.link(shared / "dir" / "out.txt", shared / "dir" / "other-name")
    os.mkfifo(shared / "dir" / "fifo")
    (shared / "folder-link").symlink_to(home)  # swapped with dir: a folder component turns into a link
    (shared / "dir" / "file-link").symlink_to(victim)  # swapped with out.txt
    for path in (shared, *shared.rglob("*")):
        os.lchown(path, OTHER_UID, OTHER_UID)
    folder_fd = os.open(shared, os.O_RDONLY | os.O_DIRECTORY)
    inner_fd = os.open(shared / "dir", os.O_RDONLY | os.O_DIRECTORY)
    children = []
    for fd, pairs in ((folder_fd, [(b"dir", b"folder-link")]),
                      (inner_fd, [(b"out.txt", b"file-link"), (b"out.txt", b"fifo")])):
        child = os.fork()
        if child == 0:
            _swap_pairs_in_a_loop(fd, pairs)
        children.append(child)
    os.close(folder_fd)
    os.close(inner_fd)
    writes = [lambda: write_output(shared / "dir" / "out.txt", "the translation\n"),
              lambda: write_run_file(shared / "dir" / "run.json", "{}"),
              lambda: safe_files.open_run_file(shared / "dir" / "metrics.jsonl", "a").close(),
              lambda: safe_files.make_folders(shared / "dir" / "made" / "deeper"),
              lambda: safe_files.make_run_folder(shared / "dir" / "tensorboard")]
    outcomes = {"done": 0, "refused": 0}
    previous = signal.signal(signal.SIGALRM, lambda *_: pytest.fail("a write hung (FIFO?)"))
    try:
        deadline = time.monotonic() + PROBE_SECONDS
        while time.monotonic() < deadline:
            for write in writes:
                signal.alarm(20)
                try:
                    write()
                    outcomes["done"] += 1
                except (TransformerMTError, OSError):
                    outcomes["refused"] += 1  # a swapped name is refused or missing: fine, never followed
                finally:
                    signal.alarm(0)
            assert sorted(p.name for p in home.iterdir()) == ["victim"], outcomes
            assert _unchanged(victim, before), outcomes
    finally:
        signal.signal(signal.SIGALRM, previous)
        for child in children:
            os.kill(child, signal.SIGKILL)
            os.waitpid(child, 0)
    assert outcomes["done"] > 0 and outcomes["done"] + outcomes["refused"] > 50, outcomes


# --- Fourth round: files READ by name followed another user's link (and leaked it in messages) -------------

def _foreign_file_link(shared: Path, name: str, target: Path) -> Path:
    link = shared / name
    link.symlink_to(target)
    os.lchown(link, OTHER_UID, OTHER_UID)
    return link


@needs_root
def test_files_read_through_another_users_link_are_refused_and_not_leaked(tmp_path, small_run):
    """--config, a checkpoint (in a run directory and as --checkpoint), a Hugging Face config.json and a run's
    metrics.jsonl linked by another user to root's files: each refused, and no secret comes back."""
    import shutil

    _, _, run = small_run
    home, shared = _foreign_folder_link(tmp_path)
    secret_yaml = home / "secret.yaml"
    secret_yaml.write_text("model:\n  d_model: TOPSECRET\n")
    result = run_cli("train", "--config", _foreign_file_link(shared, "cfg.yaml", secret_yaml),
                     "--output-dir", tmp_path / "out")
    assert_clean_error(result, "belongs to another user")
    assert "TOPSECRET" not in result.stderr
    # a run directory whose checkpoint is another user's link to root's checkpoint
    copy = shared / "run"
    shutil.copytree(run, copy, symlinks=True)
    shutil.copy(copy / "checkpoint_best.pt", home / "ck.pt")
    (copy / "checkpoint_best.pt").unlink()
    _foreign_file_link(copy, "checkpoint_best.pt", home / "ck.pt")
    assert_clean_error(run_cli("translate", "--model", copy, "ba de"), "belongs to another user")
    assert_clean_error(run_cli("translate", "--model", run, "--checkpoint", _foreign_file_link(shared, "ck.pt",
                                                                                              home / "ck.pt"), "ba de"),
                       "belongs to another user")
    # metrics.jsonl of a run, linked to a root file
    (home / "metrics.jsonl").write_text('{"event": "train", "step": 1, "loss": 1.0}\n')
    (copy / "metrics.jsonl").unlink()
    _foreign_file_link(copy, "metrics.jsonl", home / "metrics.jsonl")
    pytest.importorskip("matplotlib")
    assert_clean_error(run_cli("plot", "--model", copy, "--output", tmp_path / "plots"), "belongs to another user")
    assert not (tmp_path / "plots").exists() or not list((tmp_path / "plots").iterdir())


@needs_root
def test_a_fifo_swapped_in_for_a_checkpoint_is_refused_on_its_descriptor(tmp_path, small_run, monkeypatch):
    """The look by name said "regular file"; the file opened is a FIFO (swapped in between): refused at once,
    not waited on forever."""
    from transformer_mt import checkpoint, safe_files

    fifo = tmp_path / "ck.pt"
    os.mkfifo(fifo)
    monkeypatch.setattr(safe_files, "regular_file_problem", lambda path: None)  # the race: it looked regular
    started = time.monotonic()
    with pytest.raises(TransformerMTError, match="not a regular file"):
        checkpoint.load_checkpoint(fifo)
    assert time.monotonic() - started < 5


def test_closed_standard_input_and_absurd_server_threads_are_one_error(small_run):
    _, _, run = small_run
    import subprocess
    import sys

    closed = subprocess.run([sys.executable, "-m", "transformer_mt.cli", "translate", "--model", str(run)],
                            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120,
                            preexec_fn=lambda: os.close(0))
    assert closed.returncode == 2 and "standard input is closed" in closed.stderr and "Traceback" not in closed.stderr
    assert_clean_error(run_cli("serve", "--model", run, "--threads", "100000"), "--threads")


# --- Other libraries that write by name, and deletions: handed the folder itself, or done by descriptor -------

def test_a_library_writing_by_name_writes_into_the_held_folder_whatever_is_swapped_on_the_way(tmp_path):
    """held_folder's name stays on the folder resolved: the run directory renamed and a link planted in its place
    after the check (the window in which SummaryWriter and spec.save once re-walked the path) changes nothing."""
    run = tmp_path / "run"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    with safe_files.held_folder(run / "tensorboard") as folder:
        run.rename(tmp_path / "moved")
        run.symlink_to(elsewhere)  # the path given now leads elsewhere
        (Path(folder) / "events").write_text("x")  # what a library given ``folder`` does
    assert (tmp_path / "moved" / "tensorboard" / "events").read_text() == "x"
    assert list(elsewhere.iterdir()) == []


def test_tensorboard_event_files_go_into_the_folder_checked(tmp_path, monkeypatch):
    pytest.importorskip("tensorboard")
    from transformer_mt.training import metrics

    real = metrics.summary_writer_class()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "run").mkdir()

    def swap_then_write(**kwargs):  # the other user's swap, between the folder's check and the writer's open
        (tmp_path / "run").rename(tmp_path / "moved")
        (tmp_path / "run").symlink_to(elsewhere)
        return real(**kwargs)

    monkeypatch.setattr(metrics, "summary_writer_class", lambda: swap_then_write)
    with metrics.MetricsWriter(tmp_path / "run", tensorboard=True) as writer:
        writer.write({"type": "train", "step": 1, "loss": 2.0})
    assert list((tmp_path / "moved" / "tensorboard").glob("events.out.tfevents.*"))
    assert list(elsewhere.rglob("events.out.tfevents.*")) == []  # (metrics.jsonl follows the run, own link)


@needs_root
def test_a_held_folder_must_be_ones_own_and_not_writable_by_everyone(tmp_path):
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    os.chown(theirs, OTHER_UID, OTHER_UID)
    open_to_all = tmp_path / "open"
    open_to_all.mkdir()
    open_to_all.chmod(0o777)
    for folder, why in ((theirs, "belongs to another user"), (open_to_all, "everyone may write to")):
        with pytest.raises(TransformerMTError, match=why), safe_files.held_folder(folder):
            pass


@needs_root
def test_remove_never_deletes_through_another_users_link(tmp_path):
    home, shared = _foreign_folder_link(tmp_path)
    keep = home / "keep"
    keep.mkdir()
    (keep / "file").write_text("x")
    with pytest.raises(TransformerMTError, match="belongs to another user"):
        safe_files.remove(shared / "link" / "keep")
    safe_files.remove(shared / "link" / "keep", ignore_errors=True)
    assert (keep / "file").read_text() == "x"
    own_link = tmp_path / "own_link"
    own_link.symlink_to(keep)
    safe_files.remove(own_link)  # the link goes, not what it points to
    assert not own_link.is_symlink() and (keep / "file").exists()
    safe_files.remove(keep)
    safe_files.remove(keep)  # missing: nothing to do
    assert not keep.exists() and home.exists()


@needs_root
def test_init_from_through_another_users_link_is_refused(tmp_path, small_run):
    from transformer_mt.training.init_from import parent_checkpoint

    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    (shared / "link_run").symlink_to(small_run[2])
    os.lchown(shared / "link_run", OTHER_UID, OTHER_UID)
    with pytest.raises(TransformerMTError, match="belongs to another user"):
        parent_checkpoint(str(shared / "link_run"), keep_optimizer=False)
    assert parent_checkpoint(str(small_run[2]), keep_optimizer=False).exists()
