"""Run directories: a marker, an exclusive lock, and the files a run owns.

A directory becomes a run directory when ``train`` first writes ``run.json``
into it (only into a new or empty directory: training never takes over a
folder that already holds other files). From then on:

- one process at a time works on it: ``train`` and ``average`` hold an
  exclusive ``flock`` on ``.lock`` while they run. The kernel drops the lock
  when the process ends, however it ends (a SIGKILL leaves no stale lock);
  the file keeps the PID of the last holder so a refusal can name it.
- transformer-mt touches only the files it owns (``OWNED_PATTERNS``):
  ``--overwrite`` deletes those and nothing else, so a user's notes or data
  kept inside a run directory survive.

``prepare_run_dir`` is how training starts on one: claim and lock it, then decide from
``checkpoint_last.pt`` whether the run resumes (same config, same number of processes) or starts;
``log_positions``/``cut_logs_to_checkpoint`` keep the logs of a resumed run in step with its checkpoint;
``prepare_run_files`` tidies the directory (leftovers, a stale tokenizer) and writes its config.yaml.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import os
import re
from pathlib import Path

from .. import checkpoint as ckpt
from ..config import MAX_CONFIG_BYTES, Config, save_config, training_warnings
from ..decoding.translator import CHECKPOINT_NAMES
from ..errors import TransformerMTError
from ..safe_files import (
    NotARegularFile,
    make_own_folder,
    open_regular_file,
    open_run_file,
    read_regular_file,
    regular_file_problem,
    remove,
    write_run_file,
)

log = logging.getLogger("transformer_mt")

MARKER = "run.json"
LOCK_NAME = ".lock"
RUN_FORMAT = 1
MAX_MARKER_BYTES = 1 << 20  # run.json is a few hundred bytes; .lock holds "PID purpose"

# Files (glob patterns relative to the run directory) that a run writes and may delete again.
OWNED_PATTERNS = (
    MARKER, LOCK_NAME, "config.yaml", ".run.json.*.tmp", ".config.yaml.*.tmp", "train.log", "metrics.jsonl", "cache",
    "spm.model", "spm.vocab", "spm.train.log", "spm.src.*", "spm.tgt.*", "spm*.tmp.*",
    "checkpoint_*.pt", "checkpoint_*.pt.format1", ".checkpoint_*.pt.*",
    "shortlist.npz", ".shortlist.npz.*.tmp", "distill",  # decoding/shortlist.py, training/distill.py
)
# Left behind by a write that was interrupted (checkpoint, tokenizer, encoded corpus); never valid.
# (".NAME.tmp-PID" is how versions before safe_files named them.)
TEMPORARY_PATTERNS = (".checkpoint_*.pt.*.tmp", ".checkpoint_*.pt.tmp-*", ".checkpoint_*.pt.upgrade-*",
                      "spm*.tmp.model", "spm*.tmp.vocab", "cache/*.tmp.npz", ".run.json.*.tmp",
                      ".config.yaml.*.tmp", ".shortlist.npz.*.tmp", "distill/.*.tmp")


def _is_our_lock_file(path: Path) -> bool:
    """Empty, or 'PID purpose' as RunLock writes it: a lock file of ours (maybe of a start that failed)."""
    try:
        with open_regular_file(path) as handle:  # by descriptor, never a FIFO; a lock of ours is one short line
            text = handle.read(MAX_MARKER_BYTES + 1).decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    return text is not None and re.fullmatch(r"(\d+ [^\n]*\n)?", text) is not None


def is_run_dir(run_dir: Path) -> bool:
    return marker_problem(run_dir) is None


def marker_problem(run_dir: Path) -> str | None:
    """What keeps ``run_dir``'s run.json from marking a transformer-mt run directory ("does not exist", "is not a
    regular file ...", ...), or None when it does."""
    path = Path(run_dir) / MARKER
    try:
        marker = json.loads(read_regular_file(path, MAX_MARKER_BYTES).decode("utf-8"))
    except FileNotFoundError:
        return "does not exist"
    except NotARegularFile:
        return (regular_file_problem(path) or "is not a regular file").removesuffix(", expected a file")
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    except (ValueError, TransformerMTError):  # not JSON, not UTF-8, or larger than any marker
        return "is not the JSON file transformer-mt writes there"
    if not isinstance(marker, dict) or marker.get("tool") != "transformer-mt":
        return "is not the JSON file transformer-mt writes there"
    return None


def write_marker(run_dir: Path) -> None:
    marker = {"tool": "transformer-mt", "run_format": RUN_FORMAT, "owns": list(OWNED_PATTERNS)}
    write_run_file(run_dir / MARKER, json.dumps(marker, indent=1) + "\n")


def record_in_marker(run_dir: Path, key: str, value) -> None:
    """Set ``key`` in the run's run.json (e.g. where the run started: ``init_from``); None removes it."""
    path = run_dir / MARKER
    marker = json.loads(read_regular_file(path, MAX_MARKER_BYTES).decode("utf-8"))
    if value is None:
        marker.pop(key, None)
    else:
        marker[key] = value
    write_run_file(path, json.dumps(marker, indent=1) + "\n")


def _owned_paths(run_dir: Path, patterns) -> list[Path]:
    found = set()
    for pattern in patterns:
        found.update(run_dir.glob(pattern))
    return sorted(found)


class RunLock:
    """An exclusive, non-blocking ``flock`` on ``<run_dir>/.lock``; released on ``release()`` or process exit."""

    def __init__(self, run_dir, purpose: str):
        self.run_dir = Path(run_dir)
        self.purpose = purpose
        self.handle = None

    def acquire(self) -> RunLock:
        path = self.run_dir / LOCK_NAME
        try:
            handle = open_run_file(path, "a+")  # never through a link planted as .lock
        except OSError as exc:
            raise TransformerMTError(
                f"run directory {self.run_dir} is not writable ({exc.strerror}); make it writable or choose "
                f"another directory") from None
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            handle.seek(0)
            holder = handle.read(MAX_MARKER_BYTES).split()
            handle.close()
            if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise TransformerMTError(f"cannot lock run directory {self.run_dir}: {exc.strerror}") from None
            pid = holder[0] if holder else "unknown"
            what = " ".join(holder[1:]) or "a transformer-mt command"
            raise TransformerMTError(
                f"run directory {self.run_dir} is in use by another process (PID {pid}, {what}); wait for it to "
                f"finish or stop it, or use another --output-dir") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()} {self.purpose}\n")
        handle.flush()
        self.handle = handle
        return self

    def release(self) -> None:
        if self.handle is not None:
            fcntl.flock(self.handle.fileno(), fcntl.LOCK_UN)
            self.handle.close()
            self.handle = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def claim_run_dir(run_dir, overwrite: bool) -> RunLock:
    """Create or reopen a run directory for training: check it is ours, lock it, clean it up.

    Refuses a path that is a file, and a directory that holds files but is not a
    transformer-mt run (with or without ``overwrite``). With ``overwrite`` the run's own
    files are deleted; anything else in the directory is left alone.
    """
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise TransformerMTError(f"output directory {run_dir} is a file; choose a directory for --output-dir")
    try:
        make_own_folder(run_dir, "--output-dir")  # by descriptor; the caller's own folder, not everyone's
        others = [p.name for p in run_dir.iterdir() if not (p.name == LOCK_NAME and _is_our_lock_file(p))]
    except (OSError, TransformerMTError) as exc:
        if getattr(exc, "errno", None) is None:  # a link of another user on the way: its own message
            raise
        raise TransformerMTError(
            f"cannot create output directory {run_dir}: {os.strerror(exc.errno)}; choose another --output-dir or "
            f"fix the permissions of its parent") from None
    problem = marker_problem(run_dir) if others else None
    if problem is not None and problem != "does not exist":  # a run.json is there, but not ours
        raise TransformerMTError(
            f"output directory {run_dir} holds files and its {MARKER} {problem}, so it is not known to be a "
            f"transformer-mt run directory; training never writes into or deletes such a folder, with or without "
            f"--overwrite. If it is a run of yours, put its {MARKER} back (copy the run directory again); otherwise "
            f"choose a new or empty --output-dir")
    if problem is not None:
        shown = ", ".join(sorted(others)[:3]) + (", ..." if len(others) > 3 else "")
        raise TransformerMTError(
            f"output directory {run_dir} already holds files ({shown}) and is not a transformer-mt run directory "
            f"(no {MARKER}); training never writes into or deletes such a folder, with or without --overwrite. "
            f"Choose a new or empty --output-dir (a run of transformer-mt before checkpoint format 2 is converted "
            f"with: transformer-mt upgrade-checkpoint --trust {run_dir})")
    lock = RunLock(run_dir, "training").acquire()
    try:
        if overwrite:
            removed = [p for p in _owned_paths(run_dir, OWNED_PATTERNS) if p.name != LOCK_NAME]
            for path in removed:
                remove(path)
            if removed:
                log.info("--overwrite: deleted %d files of the earlier run in %s", len(removed), run_dir)
        if not (run_dir / MARKER).exists():
            write_marker(run_dir)
    except OSError as exc:
        lock.release()
        raise TransformerMTError(f"run directory {run_dir} cannot be prepared: {exc.strerror}: "
                                 f"{exc.filename}") from None
    except BaseException:
        lock.release()
        raise
    return lock


def remove_interrupted_writes(run_dir) -> list[Path]:
    """Delete temporary files of writes that never finished (only while holding the run's lock)."""
    paths = _owned_paths(Path(run_dir), TEMPORARY_PATTERNS)
    for path in paths:
        remove(path)
    return paths


def upgrade_run_dir(run_dir, trust: bool) -> list[Path]:
    """Convert every format-1 checkpoint of a run the user trusts and mark the directory as a run.

    Returns the checkpoints that were converted (the originals stay as ``*.pt.format1``).
    """

    run_dir = Path(run_dir)
    checkpoints = sorted(run_dir.glob("checkpoint_*.pt"))
    if not checkpoints:
        raise TransformerMTError(f"{run_dir} has no checkpoint_*.pt files to upgrade")
    with RunLock(run_dir, "upgrading checkpoints"):
        converted = [path for path in checkpoints if ckpt.upgrade_checkpoint(path, trust)]
        if not (run_dir / MARKER).exists():
            write_marker(run_dir)
    return converted


# --- set-up of a training run: claim, resume checks, logs cut back to the checkpoint --------------

# Logs that a resumed run cuts back to their length at its checkpoint (the steps after it are trained again).
RESUMED_LOGS = ("train.log", "metrics.jsonl")


def read_saved_config(path: Path) -> tuple[dict | None, str | None]:
    """The run's config.yaml as a dict, or (None, why) when it is missing or damaged."""
    import yaml

    try:
        raw = yaml.safe_load(read_regular_file(path, MAX_CONFIG_BYTES).decode("utf-8"))
    except FileNotFoundError:
        return None, "missing"
    except NotARegularFile as exc:
        return None, exc.strerror
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        return None, f"unreadable: {type(exc).__name__}"
    except TransformerMTError:  # read_within's bound
        return None, f"larger than a config ({MAX_CONFIG_BYTES:,} bytes at most)"
    if not isinstance(raw, dict) or not all(isinstance(v, dict) for v in raw.values()):
        return None, "not a mapping of sections"
    return raw, None


def prepare_run_dir(config: Config, run_dir: Path, resume: bool, overwrite: bool,
                    world_size: int = 1) -> tuple[RunLock, dict | None]:
    """Claim and lock the run directory; return the lock and, when training resumes, checkpoint_last's state.

    The checkpoint's own config decides whether the new config may continue it, and its
    number of processes whether this one may.
    """
    lock = claim_run_dir(run_dir, overwrite)
    try:
        last = run_dir / CHECKPOINT_NAMES["last"]
        if last.exists():
            state = ckpt.load_checkpoint(last)
            if "optimizer" not in state:
                raise TransformerMTError(f"{last} holds only model weights and cannot be resumed from")
            check_world_size(state, last, world_size)
            check_config_continues(state["config"], config, run_dir)
            return lock, state
        if resume:
            raise TransformerMTError(f"--resume was given but {last} does not exist; start without --resume")
        others = sorted(p.name for p in run_dir.glob("checkpoint_*.pt"))
        if others:
            raise TransformerMTError(
                f"output directory {run_dir} holds checkpoints ({', '.join(others[:3])}) but no {last.name} to "
                f"resume from; starting again would overwrite them: use another --output-dir, or pass --overwrite "
                f"to delete that run")
        return lock, None
    except BaseException:
        lock.release()
        raise


def check_config_continues(saved: dict, config: Config, run_dir: Path) -> None:
    """Refuse to resume the run whose checkpoint was trained with the config ``saved`` under ``config``, when
    they differ in more than what a resumed run may change (checkpoint.RESUMABLE_CHANGES)."""
    diffs = ckpt.config_differences(saved, config.to_dict())
    if diffs:
        raise TransformerMTError(
            f"output directory {run_dir} holds a run with a different config ({'; '.join(diffs[:5])}); "
            f"use another --output-dir, or pass --overwrite to delete that run")


def check_world_size(state: dict, path: Path, world_size: int) -> None:
    saved = state["data_position"].get("world_size", 1)
    if saved != world_size:
        how = "without torchrun" if saved == 1 else f"with torchrun --nproc_per_node/--nnodes giving {saved}"
        raise TransformerMTError(
            f"{path} was written by {saved} training process(es) and this run has {world_size}: each "
            f"process's place in the epoch and its random state belong to that number. Resume {how} "
            f"processes, or start a new run (--output-dir) with this number")


LOG_TAIL_BYTES = 4096  # the bytes before a log's recorded end whose hash identifies that log


def _tail_sha256(handle, size: int) -> str:
    """SHA-256 of the LOG_TAIL_BYTES bytes of an open log before byte ``size``; leaves the handle at ``size``."""
    handle.seek(max(0, size - LOG_TAIL_BYTES))
    return hashlib.sha256(handle.read(size - handle.tell())).hexdigest()


def log_positions(run_dir: Path) -> dict:
    """Where train.log and metrics.jsonl end now, and a hash of the bytes just before (for the checkpoint)."""
    positions = {}
    for name in RESUMED_LOGS:
        try:
            with open_regular_file(run_dir / name) as handle:
                size = handle.seek(0, os.SEEK_END)
                positions[name] = {"size": size, "tail_sha256": _tail_sha256(handle, size)}
        except FileNotFoundError:
            positions[name] = {"size": 0, "tail_sha256": hashlib.sha256(b"").hexdigest()}
    return positions


def cut_logs_to_checkpoint(run_dir: Path, positions: dict) -> dict:
    """Truncate train.log/metrics.jsonl to where they ended when the checkpoint was written.

    Returns, per file past that point, the number of lines cut, or None where it was left alone.

    A run killed after its last checkpoint logged steps that the resumed run trains again;
    keeping both would list those steps twice. A log is cut only if the bytes before that
    point are the ones the checkpoint saw (not a log replaced or copied from elsewhere).
    """
    removed = {}
    for name in RESUMED_LOGS:
        path, position = run_dir / name, positions.get(name)
        if not position or not path.is_file() or path.stat().st_size <= position["size"]:
            continue
        size = position["size"]
        with open_run_file(path, "r+b") as handle:
            if _tail_sha256(handle, size) != position["tail_sha256"]:
                removed[name] = None
                continue
            removed[name] = sum(block.count(b"\n") for block in iter(lambda: handle.read(1 << 20), b""))
            handle.truncate(size)
    return removed


def discard_stale_tokenizer(config: Config, run_dir: Path) -> None:
    """Before the first checkpoint, config.yaml says what the run's tokenizer and cached ids were built from.

    With no checkpoint (e.g. an earlier start failed on a config mistake) there is nothing to
    lose, but a tokenizer or cached ids built for other (or unknown) data must not be reused.
    """
    saved, problem = read_saved_config(run_dir / "config.yaml")
    diffs = ckpt.config_differences(saved or {}, config.to_dict())
    if problem in (None, "missing") and not any(d.startswith(("data.", "tokenizer.")) for d in diffs):
        return
    if problem not in (None, "missing"):
        log.warning("config.yaml in %s is %s; rebuilding the run's tokenizer and encoded corpus", run_dir, problem)
    for path in [p for pattern in ("spm*.model", "spm*.vocab", "spm*.ids.json") for p in run_dir.glob(pattern)]:
        remove(path)
    remove(run_dir / "cache", ignore_errors=True)


def prepare_run_files(config: Config, run_dir: Path, cut: dict, resuming: bool, init_from: dict | None) -> None:
    """Rank 0's files of a run that starts or resumes, before its tokenizer and data: log what
    cut_logs_to_checkpoint did (``cut``), remove what interrupted writes left, on a start discard a stale
    tokenizer and record the run's parent (``init_from``) in run.json, then write config.yaml and log the
    config's warnings."""
    for name, lines in cut.items():
        if lines is None:
            log.warning("%s does not match checkpoint_last.pt (changed since, or from another run): left as "
                        "it is, so records after the checkpoint may repeat", run_dir / name)
            continue
        log.info("%s: removed %d lines written after checkpoint_last.pt (the run goes on from that "
                 "checkpoint and logs those steps again)", name, lines)
    for path in remove_interrupted_writes(run_dir):
        log.info("removed %s, left by an interrupted write", path)
    if not resuming:
        discard_stale_tokenizer(config, run_dir)
        record_in_marker(run_dir, "init_from", init_from)
    else:
        _, problem = read_saved_config(run_dir / "config.yaml")
        if problem is not None:
            log.warning("config.yaml in %s is %s; it is written again from the config (the checkpoint's own "
                        "config matched it)", run_dir, problem)
    save_config(config, run_dir / "config.yaml")
    for message in training_warnings(config):
        log.warning("%s", message)
