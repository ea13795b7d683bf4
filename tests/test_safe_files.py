"""Writes that cannot be turned against the user (issue 25): planted links, devices, FIFOs, hard links,
owners and modes, for the safe_files module itself and for every command that writes."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest
import yaml
from conftest import assert_clean_error, run_cli, tiny_config, write_reverse_corpus
from hypothesis import given, settings
from hypothesis import strategies as st

from transformer_mt.errors import TransformerMTError
from transformer_mt.safe_files import open_run_file, regular_file_problem, write_output, write_run_file

IS_ROOT = os.geteuid() == 0
OTHER_UID = 54321  # a user id that owns nothing here: the "other user" who plants links
needs_root = pytest.mark.skipif(not IS_ROOT, reason="needs root: making a link another user owns (lchown), "
                                                    "device nodes and other owners need it")


def _victim(tmp_path: Path) -> Path:
    """A file only its owner may read, standing for /etc/shadow."""
    victim = tmp_path / "victim"
    victim.write_text("secret\n")
    victim.chmod(0o600)
    return victim


def _foreign_link(link: Path, target: Path) -> None:
    link.symlink_to(target)
    os.lchown(link, OTHER_UID, OTHER_UID)


def _read_fifo_in_background(path: Path) -> tuple[threading.Thread, list]:
    received = []

    def read():
        with open(path, "rb") as handle:
            received.append(handle.read())

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return thread, received


# --- write_output: an output the user named ----------------------------------------------------------------

@settings(max_examples=25, deadline=None)
@given(st.text(max_size=200), st.sampled_from([0o600, 0o640, 0o644, 0o664, 0o400]))
def test_an_existing_file_is_replaced_with_its_mode_kept(tmp_path_factory, text, mode):
    out = tmp_path_factory.mktemp("out") / "out.txt"
    out.write_text("old")
    out.chmod(mode)
    write_output(out, text)
    assert out.read_bytes() == text.encode("utf-8")
    assert stat.S_IMODE(out.stat().st_mode) == mode
    assert sorted(p.name for p in out.parent.iterdir()) == ["out.txt"]  # no temporary file left behind


def test_a_new_file_gets_the_mode_a_plain_create_gives(tmp_path):
    old = os.umask(0o027)
    try:
        write_output(tmp_path / "new.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "new.txt").stat().st_mode) == 0o640


def test_links_planted_under_the_old_predictable_temporary_names_are_never_written(tmp_path):
    victim = _victim(tmp_path)
    out_dir = tmp_path / "shared"
    out_dir.mkdir()
    for pid in range(os.getpid() - 5, os.getpid() + 5):  # the names the tool used before: .NAME.tmp-PID
        (out_dir / f".out.txt.tmp-{pid}").symlink_to(victim)
    write_output(out_dir / "out.txt", "translation\n")
    assert victim.read_text() == "secret\n" and stat.S_IMODE(victim.stat().st_mode) == 0o600
    assert (out_dir / "out.txt").read_text() == "translation\n"


def test_a_failed_write_leaves_the_old_file_and_no_temporary_file(tmp_path):
    out = tmp_path / "out.txt"
    out.write_text("old")

    def fail(handle):
        handle.write(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(TransformerMTError, match="No space left on device; it was left as it was"):
        write_output(out, fail)
    assert out.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_an_own_link_is_followed_and_kept(tmp_path):
    target = tmp_path / "real.txt"
    target.write_text("old")
    link = tmp_path / "link.txt"
    link.symlink_to(target)
    write_output(link, "new")
    assert link.is_symlink() and target.read_text() == "new"


@needs_root
def test_a_link_planted_by_another_user_is_refused(tmp_path):
    victim = _victim(tmp_path)
    _foreign_link(tmp_path / "out.txt", victim)
    with pytest.raises(TransformerMTError, match="belongs to another user"):
        write_output(tmp_path / "out.txt", "translation")
    assert victim.read_text() == "secret\n"


def test_a_link_loop_is_a_clear_error(tmp_path):
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    with pytest.raises(TransformerMTError, match="symbolic link loop"):
        write_output(tmp_path / "a", "x")


def test_a_hard_linked_file_is_written_in_place(tmp_path):
    first, second = tmp_path / "first.txt", tmp_path / "second.txt"
    first.write_text("old")
    os.link(first, second)
    write_output(first, "new")
    assert second.read_text() == "new" and first.stat().st_ino == second.stat().st_ino


@needs_root
def test_root_replacing_a_users_file_keeps_its_owner(tmp_path):
    out = tmp_path / "out.txt"
    out.write_text("old")
    os.chown(out, OTHER_UID, OTHER_UID + 1)
    write_output(out, "new")
    assert (out.stat().st_uid, out.stat().st_gid) == (OTHER_UID, OTHER_UID + 1)


def test_a_fifo_is_written_to_not_replaced(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    thread, received = _read_fifo_in_background(fifo)
    write_output(fifo, "through the pipe\n")
    thread.join(timeout=30)
    assert received == [b"through the pipe\n"]
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


@needs_root
def test_a_character_device_is_written_to_not_replaced(tmp_path):
    device = tmp_path / "null"
    try:
        os.mknod(device, stat.S_IFCHR | 0o666, os.makedev(1, 3))  # the same device as /dev/null
    except PermissionError:
        pytest.skip("this container may not make device nodes (mknod EPERM)")
    write_output(device, "gone\n")
    assert stat.S_ISCHR(os.lstat(device).st_mode)
    if os.path.exists("/dev/full"):
        with pytest.raises(TransformerMTError, match="No space left on device"):
            write_output("/dev/full", "x")
        assert stat.S_ISCHR(os.lstat("/dev/full").st_mode)


def test_dev_stdout_works(tmp_path):
    code = "from transformer_mt.safe_files import write_output; write_output('/dev/stdout', 'to stdout\\n')"
    to_pipe = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert to_pipe.returncode == 0, to_pipe.stderr
    assert to_pipe.stdout == "to stdout\n"
    redirected = tmp_path / "redirected.txt"
    redirected.write_text("old content, longer than the new\n")
    with open(redirected, "r+b") as handle:
        result = subprocess.run([sys.executable, "-c", code], stdout=handle, stderr=subprocess.PIPE, timeout=60)
    assert result.returncode == 0, result.stderr
    assert redirected.read_text() == "to stdout\n"


# --- run-directory files -------------------------------------------------------------------------------------

def test_run_files_refuse_links_fifos_and_directories(tmp_path):
    victim = _victim(tmp_path)
    (tmp_path / "link").symlink_to(victim)
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "folder").mkdir()
    for name in ("link", "fifo", "folder"):
        with pytest.raises(TransformerMTError, match="symbolic link|not a regular file"):
            write_run_file(tmp_path / name, "x")
    for name, mode in (("link", "a"), ("link", "r+b"), ("link", "a+"), ("link", "w"), ("fifo", "a"), ("fifo", "w")):
        with pytest.raises(TransformerMTError, match="symbolic link|not a regular file"):
            open_run_file(tmp_path / name, mode)
    assert victim.read_text() == "secret\n"
    assert stat.S_ISFIFO(os.lstat(tmp_path / "fifo").st_mode)


def test_regular_file_problem_names_each_kind(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    (tmp_path / "file").write_text("x")
    assert regular_file_problem(tmp_path / "file") is None
    assert "not a regular file" in regular_file_problem(tmp_path / "fifo")
    assert "not a regular file" in regular_file_problem("/dev/zero")
    assert "loop" in regular_file_problem(tmp_path / "loop")
    assert "directory" in regular_file_problem(tmp_path)


# --- the commands ----------------------------------------------------------------------------------------------

def test_translate_output_dev_stdout_fifo_and_foreign_links(small_run, tmp_path):
    _, _, run = small_run
    result = run_cli("translate", "--model", run, "--device", "cpu", "--output", "/dev/stdout",
                     input_bytes=b"ba be bi\n")
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 1

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    thread, received = _read_fifo_in_background(fifo)
    result = run_cli("translate", "--model", run, "--device", "cpu", "--output", fifo, input_bytes=b"ba be\nbi\n")
    assert result.returncode == 0, result.stderr
    thread.join(timeout=30)
    assert len(received[0].splitlines()) == 2 and stat.S_ISFIFO(os.lstat(fifo).st_mode)

    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    assert_clean_error(run_cli("translate", "--model", run, "--device", "cpu", "--output", tmp_path / "a",
                               input_bytes=b"ba\n"), "symbolic link loop")
    if IS_ROOT:
        victim = _victim(tmp_path)
        _foreign_link(tmp_path / "planted.txt", victim)
        for command in (("translate", "--model", run, "--device", "cpu"),
                        ("evaluate", "--model", run, "--device", "cpu", "--split", "test")):
            assert_clean_error(run_cli(*command, "--output", tmp_path / "planted.txt", input_bytes=b"ba\n"),
                               "belongs to another user")
        assert victim.read_text() == "secret\n" and stat.S_IMODE(victim.stat().st_mode) == 0o600


def _copy_of_run(run: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "shared_run"
    shutil.copytree(run, copy)
    return copy


@pytest.mark.parametrize("name", [".lock", "config.yaml", "train.log", "metrics.jsonl", "run.json"])
def test_a_resumed_training_never_writes_through_a_link_in_its_run_directory(small_run, tmp_path, name):
    tmp, data, run = small_run
    copy = _copy_of_run(run, tmp_path)
    victim = _victim(tmp_path)
    (copy / name).unlink(missing_ok=True)
    (copy / name).symlink_to(victim)
    config = tmp_path / "config.yaml"
    raw = yaml.safe_load((run / "config.yaml").read_text())
    raw["training"]["max_steps"] = 3
    config.write_text(yaml.safe_dump(raw))
    result = run_cli("train", "--config", config, "--output-dir", copy, "--resume")
    assert victim.read_text() == "secret\n" and stat.S_IMODE(victim.stat().st_mode) == 0o600
    if name == "run.json":  # read, not written, while it is there: a link to a non-marker is not a run
        assert result.returncode == 2 and "Traceback" not in result.stderr
    else:
        assert_clean_error(result, str(copy / name), "symbolic link")


def test_average_and_plot_never_write_through_a_link(small_run, tmp_path):
    _, _, run = small_run
    copy = _copy_of_run(run, tmp_path)
    victim = _victim(tmp_path)
    (copy / "checkpoint_average.pt").symlink_to(victim)
    assert_clean_error(run_cli("average", "--model", copy, "--last", "1"), "checkpoint_average.pt", "symbolic link")
    (copy / "checkpoint_average.pt").unlink()
    (copy / ".lock").unlink(missing_ok=True)
    (copy / ".lock").symlink_to(victim)
    assert_clean_error(run_cli("average", "--model", copy, "--last", "1"), ".lock", "symbolic link")
    (copy / "learning_curves.png").symlink_to(victim)
    assert_clean_error(run_cli("plot", "--model", copy, "--output", copy), "learning_curves.png", "symbolic link")
    assert victim.read_text() == "secret\n" and stat.S_IMODE(victim.stat().st_mode) == 0o600


def test_average_output_fifo_is_not_replaced(small_run, tmp_path):
    _, _, run = small_run
    copy = _copy_of_run(run, tmp_path)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    thread, received = _read_fifo_in_background(fifo)
    result = run_cli("average", "--model", copy, "--last", "1", "--output", fifo)
    thread.join(timeout=60)
    assert result.returncode == 0, result.stderr
    assert received and received[0][:2] == b"PK"  # a torch zip archive went through the pipe
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def _reachable_by_others(path: str) -> bool:
    parents = Path(os.path.realpath(path)).parents
    return all(os.stat(folder).st_mode & stat.S_IXOTH for folder in parents)


def test_plot_into_a_folder_it_cannot_write_is_one_clear_error(small_run, tmp_path, monkeypatch):
    """What a normal user gets from an unwritable --output (root ignores permissions, so the refusal is simulated)."""
    from transformer_mt.training import plotting

    _, _, run = small_run

    def refused(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("transformer_mt.safe_files._create_exclusive", refused)
    with pytest.raises(TransformerMTError, match="cannot write plot .*learning_curves.png: Permission denied"):
        plotting.plot_learning_curves([run], tmp_path)


@pytest.mark.skipif(not IS_ROOT, reason="needs root to run the command as another (non-root) user")
@pytest.mark.skipif(not _reachable_by_others(sys.executable),
                    reason=f"the Python interpreter {os.path.realpath(sys.executable)} lies in a folder other users "
                           f"cannot enter, so no other user can run the command")
def test_plot_into_an_unwritable_directory_as_a_normal_user(small_run):
    _, _, run = small_run
    shared = Path(tempfile.mkdtemp(prefix="h4-nonroot-"))  # pytest's own folders are closed to other users
    try:
        shared.chmod(0o755)
        copy = _copy_of_run(run, shared)
        for path in (copy, *copy.rglob("*")):
            path.chmod(0o755 if path.is_dir() else 0o644)
        out = shared / "locked"
        out.mkdir(mode=0o755)

        def become_other_user():
            os.setgid(OTHER_UID)
            os.setuid(OTHER_UID)

        result = subprocess.run([sys.executable, "-m", "transformer_mt.cli", "plot", "--model", str(copy),
                                 "--output", str(out)], capture_output=True, text=True, timeout=300,
                                preexec_fn=become_other_user, env={**os.environ, "MPLCONFIGDIR": str(shared),
                                                                   "HOME": str(shared)},
                                cwd=Path(__file__).resolve().parents[1])
        assert_clean_error(result, "learning_curves.png", "Permission denied")
    finally:
        shutil.rmtree(shared)


def test_a_cache_lock_never_creates_the_file_a_planted_link_points_at(tmp_path):
    from transformer_mt.data.corpus import _exclusive_lock

    elsewhere = tmp_path / "created-elsewhere"
    (tmp_path / ".entry.lock").symlink_to(elsewhere)
    with pytest.raises(TransformerMTError, match="symbolic link"):
        with _exclusive_lock(tmp_path / ".entry.lock", "to test"):
            pass
    assert not elsewhere.exists()


@pytest.mark.parametrize("name", ["run.json", "config.yaml", "train.log", "metrics.jsonl"])
def test_a_fifo_planted_as_a_run_file_is_refused_without_hanging(small_run, tmp_path, name):
    _, _, run = small_run
    copy = _copy_of_run(run, tmp_path)
    (copy / name).unlink(missing_ok=True)
    os.mkfifo(copy / name)
    config = tmp_path / "config.yaml"
    raw = yaml.safe_load((run / "config.yaml").read_text())
    raw["training"]["max_steps"] = 3
    config.write_text(yaml.safe_dump(raw))
    result = run_cli("train", "--config", config, "--output-dir", copy, "--resume", timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: ")
    assert stat.S_ISFIFO(os.lstat(copy / name).st_mode)  # left where it was, never opened for reading


def test_a_fifo_in_the_corpus_cache_is_rebuilt_around_not_read(small_run, tmp_path):
    _, _, run = small_run
    copy = _copy_of_run(run, tmp_path)
    planted = next((copy / "cache").glob("*/src_ids.npy"))
    planted.unlink()
    os.mkfifo(planted)
    config = tmp_path / "config.yaml"
    raw = yaml.safe_load((run / "config.yaml").read_text())
    raw["training"]["max_steps"] = 3
    config.write_text(yaml.safe_dump(raw))
    result = run_cli("train", "--config", config, "--output-dir", copy, "--resume", timeout=120)
    assert result.returncode == 0, result.stderr
    assert "not a regular file" in result.stderr and "rebuilding it" in result.stderr
    assert stat.S_ISREG(os.lstat(planted).st_mode)


def test_a_runs_cache_folder_that_is_a_link_is_refused(small_run, tmp_path):
    _, _, run = small_run
    copy = _copy_of_run(run, tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.rmtree(copy / "cache")
    (copy / "cache").symlink_to(elsewhere)
    config = tmp_path / "config.yaml"
    raw = yaml.safe_load((run / "config.yaml").read_text())
    raw["training"]["max_steps"] = 3
    config.write_text(yaml.safe_dump(raw))
    assert_clean_error(run_cli("train", "--config", config, "--output-dir", copy, "--resume"),
                       str(copy / "cache"), "symbolic link")
    assert list(elsewhere.iterdir()) == []


@needs_root
def test_a_folder_link_of_another_user_on_the_way_to_an_output_is_refused(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    victim = home / "notes.txt"
    victim.write_text("mine\n")
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    _foreign_link(shared / "results", home)  # another user's link to the victim's folder
    for output in (shared / "results" / "notes.txt", shared / "results" / "." / "notes.txt"):
        with pytest.raises(TransformerMTError, match="belongs to another user"):
            write_output(output, "translation")
    own = tmp_path / "own_link.txt"
    own.symlink_to(shared / "results" / "notes.txt")  # an own link whose target passes through the foreign one
    with pytest.raises(TransformerMTError, match="belongs to another user"):
        write_output(own, "translation")
    assert victim.read_text() == "mine\n"
    (tmp_path / "mine").symlink_to(home)  # the user's own link to a folder is followed as before
    write_output(tmp_path / "mine" / "out.txt", "translation")
    assert (home / "out.txt").read_text() == "translation"


@needs_root
def test_a_foreign_link_is_refused_however_the_path_to_it_is_spelled(tmp_path, monkeypatch):
    """/dev/.., /proc/self/cwd and /proc/self/root reach any folder: the link's owner is checked first."""
    victim = _victim(tmp_path)
    _foreign_link(tmp_path / "planted.txt", victim)
    monkeypatch.chdir(tmp_path)
    for spelling in (f"/dev/..{tmp_path}/planted.txt", "/proc/self/cwd/planted.txt",
                     f"/proc/self/root{tmp_path}/planted.txt"):
        with pytest.raises(TransformerMTError, match="belongs to another user"):
            write_output(spelling, "translation")
    assert victim.read_text() == "secret\n"
    write_output(f"/dev/..{tmp_path}/own.txt", "mine")  # a plain file reached that way is written as any other
    assert (tmp_path / "own.txt").read_text() == "mine"


@needs_root
def test_export_refuses_a_foreign_folder_link_on_the_way(small_run, tmp_path):
    _, _, run = small_run
    home = tmp_path / "home"
    home.mkdir()
    shared = tmp_path / "shared"
    shared.mkdir()
    _foreign_link(shared / "results", home)
    assert_clean_error(run_cli("export", "--model", run, "--output", shared / "results" / "ct2"),
                       "belongs to another user")
    assert list(home.iterdir()) == []


def test_output_that_is_the_prefix_file_is_refused(small_run, tmp_path):
    _, _, run = small_run
    prefixes = tmp_path / "prefixes.txt"
    prefixes.write_text("ba\n")
    assert_clean_error(run_cli("translate", "--model", run, "--device", "cpu", "--prefix-file", prefixes,
                               "--output", prefixes, "ba de"), "--prefix-file")
    assert prefixes.read_text() == "ba\n"


# --- run directories: the caller's own folder ----------------------------------------------------------------

@settings(max_examples=30, deadline=None)
@given(mode=st.integers(0o700, 0o777), foreign=st.booleans() if IS_ROOT else st.just(False))
def test_a_run_directory_must_be_the_callers_own_and_not_everyones(tmp_path_factory, mode, foreign):
    """Checkpoints are read back on resume: whoever owns the folder, or anyone in a world-writable one, could
    rename them away and put their own in their place, so training only claims a folder of the caller's own."""
    from transformer_mt.training.rundir import claim_run_dir

    run_dir = tmp_path_factory.mktemp("shared") / "run"
    run_dir.mkdir()
    run_dir.chmod(mode)
    if foreign:
        os.chown(run_dir, OTHER_UID, OTHER_UID)
    if foreign or mode & stat.S_IWOTH:
        with pytest.raises(TransformerMTError, match="--output-dir .*(belongs to another user|everyone may write)"):
            claim_run_dir(run_dir, overwrite=False)
        assert list(run_dir.iterdir()) == []  # nothing written into it
    else:
        claim_run_dir(run_dir, overwrite=False).release()
        assert (run_dir / "run.json").is_file()


@needs_root
def test_train_refuses_a_run_directory_another_user_made(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o1777)  # a sticky shared folder such as /tmp
    theirs = shared / "out"
    theirs.mkdir()
    os.chown(theirs, OTHER_UID, OTHER_UID)
    data = write_reverse_corpus(tmp_path / "data", n_train=50, n_valid=5, n_test=5)
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(tiny_config(data, max_steps=1).to_dict()))
    result = run_cli("train", "--config", str(config), "--output-dir", str(theirs))
    assert_clean_error(result, "belongs to another user")
    assert list(theirs.iterdir()) == []


@needs_root
@settings(max_examples=20, deadline=None)
@given(depth=st.integers(1, 3), level=st.integers(0, 2), kind=st.sampled_from(["foreign", "open", "sticky"]))
def test_no_folder_above_a_run_directory_lets_another_user_swap_it(tmp_path_factory, depth, level, kind):
    """The run directory's own folder is the caller's, but a folder above it is another user's (who may rename
    what is in it) or everyone's without the sticky bit: refused. A sticky everyone's folder (/tmp) is fine."""
    from transformer_mt.training.rundir import claim_run_dir

    base = tmp_path_factory.mktemp("above")
    folders = [base / "/".join(f"d{i}" for i in range(j + 1)) for j in range(depth)]
    for folder in folders:
        folder.mkdir()
    above = folders[min(level, depth - 1)]
    if kind == "foreign":
        os.chown(above, OTHER_UID, OTHER_UID)
    else:
        above.chmod(0o777 if kind == "open" else 0o1777)
    run_dir = folders[-1] / "run"
    if kind == "sticky":
        claim_run_dir(run_dir, overwrite=False).release()
        assert (run_dir / "run.json").is_file()
    else:
        with pytest.raises(TransformerMTError, match=f"the folder {above} that holds it"):
            claim_run_dir(run_dir, overwrite=False)
        assert not (run_dir / "run.json").exists()
