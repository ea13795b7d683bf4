"""The one way transformer-mt opens a path to write it (and a user's file to read it), so that a write
cannot be turned against the user.

**One resolver, by descriptor.** Every path goes through :func:`_resolve`, which walks it component by
component with directory descriptors (``os.open(part, O_PATH|O_DIRECTORY|O_NOFOLLOW, dir_fd=...)``), never by
name from the top again. A symbolic link met on the way is followed only when its owner is the user running
the command or root (``/dev/stdout``, ``/proc/self``, a link of one's own), its text being walked the same way
(40 links at most, as the kernel); a link another user planted, anywhere in the path, is refused, since whoever
owns a link chooses where it points. Every operation then happens relative to the descriptor of the last folder
(``dir_fd``), on the object that was inspected:

- a new or replaced file is written to a fresh file under an unpredictable name (``O_CREAT|O_EXCL|O_NOFOLLOW``)
  beside it and renamed over the name (``rename`` never follows a link at its destination), so a failure or
  Ctrl-C midway leaves the old file as it was;
- a file written in place is opened with ``O_NOFOLLOW|O_NONBLOCK`` (never ``O_TRUNC``), and only after ``fstat``
  of the open descriptor shows the object inspected before (type, device, inode, owner) is it truncated;
- a FIFO or device is opened non-blocking (a FIFO nobody reads is refused at once instead of hanging), and only
  when its owner is the user running the command or root.

Two kinds of destination, two rules:

- A file of a **run directory** (checkpoints, config.yaml, run.json, train.log, metrics.jsonl, plots, .lock,
  cache entries): run directories are copied and shared, so whoever prepared one may have put a symbolic link
  where a run file goes. Such a file is never written through a link and never a device or FIFO:
  ``write_run_file``/``open_run_file``/``make_run_folder`` refuse both with a clear error.
- An **output the user named** (``translate --output``, ``evaluate --output``, ``average --output``,
  ``back-translate --output-prefix``): ``write_output`` writes where the user pointed, as a shell's ``>``
  would, with these differences:

  * a regular file is replaced atomically (above). The replacement keeps the old file's mode, and when run by
    root, its owner and group (root writing a user's file must not take it over);
  * a file with several hard links is written in place (truncated and rewritten), so every name still shows the
    same content, as after ``>``; it is then not atomic;
  * anything that is not a regular file (a character device such as ``/dev/null``, a FIFO, a terminal,
    ``/dev/stdout``) is opened and written straight to, never renamed over; so is a regular file reached in
    /dev or /proc (``/dev/stdout`` redirected to a file). The process's own descriptors (``/proc/self/fd/N``)
    are opened through their link, as the kernel does;
  * a symbolic link is followed only as said above.

Folders (``make_folders``: run directories, plot and import folders, caches) are created component by component
the same way. Reading: ``open_regular_file``/``read_regular_file`` resolve a path the same way, open it without
blocking and refuse anything but a regular file (a FIFO planted where a run or cache file belongs would hang
the open); ``regular_file_problem`` names what keeps a path from being read as a file. A FIFO of the user's
own named as an input (``open_for_reading``) is opened again blocking once inspected, so that it waits for
its writer as ``cat`` does; another user's FIFO or device is refused.

**One bound on reading whole.** Whatever is read into memory whole (an input, a config, a key file, a run's
marker) is read by ``read_within``, with a limit the caller sets for that kind of file: a regular file larger
than it is refused from its size, a FIFO or device at the byte past it, and the error names the option or
file, its size and the limit. ``read_user_file`` and ``read_regular_file`` take that limit as a required
argument; everything else (corpora, checkpoints) is streamed from the handle ``open_user_file`` /
``open_for_reading`` gives.

Every refusal is a :class:`TransformerMTError` naming the path (and option) and what to do.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import select
import shutil
import stat
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from .errors import TransformerMTError

Content = bytes | str | Callable[[BinaryIO], None]

MAX_LINK_HOPS = 40  # as the kernel's limit; more is a loop
# Paths whose files are the process's streams or the system's devices: written straight, never replaced.
_STREAM_FOLDERS = ("/dev/", "/proc/")
FIFO_READER_WAIT_S = 5.0  # how long a FIFO of one's own may go without a reader before it is refused
_DIR_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_DESCRIPTOR_FOLDER = re.compile(r"/proc/\d+(/task/\d+)?/fd")


def current_umask() -> int:
    """The process's umask (read from /proc where it can be, without changing it)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _trusted(uid: int) -> bool:
    """Whether a link or special file owned by ``uid`` may be used: the caller's own, or root's."""
    return uid in (os.geteuid(), 0)


class _PathProblem(TransformerMTError):
    """A folder on the way cannot be used (missing, not a folder, not searchable); ``errno`` says which, so that
    a read can report it as the OSError its caller expects."""

    def __init__(self, message: str, error: int = errno.EINVAL):
        super().__init__(message)
        self.errno = error


class _Missing(_PathProblem):
    """A folder on the way does not exist (and was not to be created)."""

    def __init__(self, message: str, error: int = errno.ENOENT):
        super().__init__(message, error)


class _Walk:
    """What one resolution is about (the path as given and its option, for messages) and its link count."""

    def __init__(self, path, option: str | None):
        self.path = os.fspath(path)
        self.option = option
        self.hops = 0

    def error(self, what: str, cls=TransformerMTError, *args) -> TransformerMTError:
        where = f"{self.option} {self.path}" if self.option else self.path
        fix = f"choose another {self.option}" if self.option else "fix the path and run again"
        return cls(f"{where}: {what} {fix}" if what.endswith(" or") else f"{where}: {what}; {fix}", *args)

    def hop(self) -> None:
        self.hops += 1
        if self.hops > MAX_LINK_HOPS:
            raise self.error("is a symbolic link loop (or its links change while it is read)", _PathProblem, errno.ELOOP)

    def link_target(self, dir_fd: int, name: str, info: os.stat_result, shown: str) -> str:
        """The text of the link ``name`` (in ``dir_fd``) if it may be followed; a foreign link is refused."""
        if not _trusted(info.st_uid):
            what = f"{shown} is" if shown != str(self.path) else "is"  # the path is named once
            raise self.error(f"{what} a symbolic link that belongs to another user (uid {info.st_uid}); it is not "
                             f"followed, since whoever made it chooses where it leads (what is read or written). "
                             f"Remove it or")
        self.hop()
        return os.readlink(name, dir_fd=dir_fd)


def _root_or_cwd(absolute: bool) -> int:
    return os.open("/" if absolute else ".", _DIR_FLAGS)


def _walk_folders(fd: int, parts: list[str], walk: _Walk, create: bool, shown: str) -> int:
    """Descend from the folder ``fd`` (taken over: closed or returned) through ``parts``, following links as
    the module says; create missing folders when ``create``. Returns the descriptor of the last folder."""
    pending = list(parts)
    try:
        while pending:
            part = pending.pop(0)
            if part in ("", "."):
                continue
            try:
                following = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                if exc.errno not in (errno.ELOOP, errno.ENOTDIR, errno.ENOENT):
                    raise walk.error(f"{os.path.join(shown, part)} cannot be opened ({exc.strerror})", _PathProblem,
                                     exc.errno) from None
                here = os.path.join(shown, part)
                try:
                    info = os.lstat(part, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise walk.error(f"directory {here} does not exist; create it or", _Missing) from None
                    try:
                        os.mkdir(part, 0o777, dir_fd=fd)
                    except FileExistsError:
                        pass
                    except OSError as exc:
                        raise walk.error(f"directory {here} cannot be created ({exc.strerror})", _PathProblem,
                                         exc.errno) from None
                    walk.hop()  # bounds a race of a folder made and removed again
                    pending.insert(0, part)
                    continue
                if stat.S_ISLNK(info.st_mode):
                    target = walk.link_target(fd, part, info, here)
                    if target.startswith("/"):
                        os.close(fd)
                        fd = _root_or_cwd(True)
                        shown = "/"
                    pending[:0] = target.split("/")
                    continue
                if stat.S_ISDIR(info.st_mode):  # it changed under us: look again
                    walk.hop()
                    pending.insert(0, part)
                    continue
                raise walk.error(f"{here} is not a directory", _PathProblem, errno.ENOTDIR) from None
            os.close(fd)
            fd = following
            shown = ".." if part == ".." and shown == "" else os.path.join(shown, part)
        return fd
    except BaseException:
        os.close(fd)
        raise


def _fd_path(fd: int) -> str:
    """The path the kernel gives for the open folder ``fd`` (for messages and the /dev, /proc rules)."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""


class _Target:
    """A resolved path: the descriptor of its folder, the last name in it, and whether that name is one of the
    process's own descriptors (``/proc/self/fd/N``), which is opened through its link."""

    def __init__(self, dir_fd: int, name: str, walk: _Walk, descriptor: bool = False, info=False):
        self.dir_fd, self.name, self.walk, self.descriptor = dir_fd, name, walk, descriptor
        self.info = self._inspect() if info is False else info

    @property
    def folder(self) -> str:
        return _fd_path(self.dir_fd)

    @property
    def path(self) -> Path:
        return Path(self.folder) / self.name

    def in_device_folder(self) -> bool:
        return (self.folder + "/").startswith(_STREAM_FOLDERS)

    def _inspect(self) -> os.stat_result | None:
        try:
            return os.stat(self.name, dir_fd=self.dir_fd, follow_symlinks=self.descriptor)
        except FileNotFoundError:
            return None

    def lstat(self) -> os.stat_result | None:
        """What was at the name when it was resolved: the one inspection every later step checks against
        (a second look could see something else, swapped in between)."""
        return self.info


@contextlib.contextmanager
def _resolve(path, option: str | None = None, *, follow_last: bool = False,
             create_folders: bool = False) -> Iterator[_Target]:
    """THE resolver: ``path`` walked by descriptor up to its last component (see the module docstring).

    ``follow_last``: a symbolic link as the last component is followed under the same rule (outputs the user
    named, files read); otherwise it is left for the caller to refuse (run files). ``create_folders``: the
    folders on the way are created (``mkdir -p``). Yields a :class:`_Target`; its descriptor is closed after.
    """
    walk = _Walk(path, option)
    text = walk.path
    if not text:
        raise walk.error("is empty")
    fd = _root_or_cwd(text.startswith("/"))
    shown = "/" if text.startswith("/") else ""
    parts = text.split("/")
    descriptor = False
    info: os.stat_result | None | bool = False  # False: not looked at yet
    try:
        while True:
            *folders, name = parts
            walking, fd = fd, -1  # _walk_folders takes the descriptor over (closes it on an error)
            fd = _walk_folders(walking, folders, walk, create_folders, shown)
            shown = _fd_path(fd) or shown
            if name in ("", ".", ".."):
                raise walk.error("is a directory; give a file name inside it")
            if not follow_last:
                break
            try:
                info = os.lstat(name, dir_fd=fd)
            except FileNotFoundError:
                info = None
                break
            if not stat.S_ISLNK(info.st_mode):
                break  # this inspection is the one the caller acts on, not a second look
            target = walk.link_target(fd, name, info, os.path.join(shown, name))
            info = False
            if _DESCRIPTOR_FOLDER.fullmatch(_fd_path(fd)):
                # /dev/stdout -> /proc/self/fd/1 -> "pipe:[...]": the kernel opens the descriptor's file, which
                # the text of the link does not name; the link is the process's own.
                descriptor = True
                break
            if target.startswith("/"):
                os.close(fd)
                fd = _root_or_cwd(True)
            parts = target.split("/")
        resolved = _Target(fd, name, walk, descriptor, info)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        raise
    try:
        yield resolved
    finally:
        os.close(fd)


@contextlib.contextmanager
def _resolve_folder(path, option: str | None = None, *, create: bool = False) -> Iterator[int]:
    """The descriptor of the folder ``path`` (every component a folder, links followed under the rule)."""
    walk = _Walk(path, option)
    text = walk.path or "."
    fd = _walk_folders(_root_or_cwd(text.startswith("/")), text.split("/"), walk, create,
                       "/" if text.startswith("/") else "")
    try:
        yield fd
    finally:
        os.close(fd)


# --- writing -------------------------------------------------------------------------------------------------

def _write_content(handle: BinaryIO, content: Content) -> None:
    if callable(content):
        content(handle)
    else:
        handle.write(content.encode("utf-8") if isinstance(content, str) else content)


def _fsync_folder(dir_fd: int) -> None:
    try:
        fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError:
        return  # not every file system lets a directory be opened; the rename is done either way
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _create_exclusive(dir_fd: int, name: str, mode: int = 0o600) -> tuple[int, str]:
    """A new file beside ``name`` under an unpredictable name, created with O_EXCL|O_NOFOLLOW (so nobody can
    have planted anything under it); returns its descriptor and name."""
    for _ in range(100):
        tmp_name = f".{name[:200]}.{secrets.token_hex(6)}.tmp"
        try:
            fd = os.open(tmp_name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode,
                         dir_fd=dir_fd)
        except FileExistsError:
            continue
        return fd, tmp_name
    raise FileExistsError(errno.EEXIST, "no free temporary name", name)


def _replace_atomically(target: _Target, content: Content, old: os.stat_result | None, durable: bool,
                        mode: int | None = None) -> None:
    """Write ``content`` to a fresh file beside the target and rename it over the target's name."""
    fd, tmp_name = _create_exclusive(target.dir_fd, target.name)
    try:
        with os.fdopen(fd, "wb") as handle:
            _write_content(handle, content)
            handle.flush()
            if old is not None and stat.S_ISREG(old.st_mode):
                os.fchmod(handle.fileno(), stat.S_IMODE(old.st_mode))
                if os.geteuid() == 0:
                    os.fchown(handle.fileno(), old.st_uid, old.st_gid)
            else:
                os.fchmod(handle.fileno(), 0o666 & ~current_umask() if mode is None else mode)  # as a create
            if durable:
                os.fsync(handle.fileno())
        # rename replaces the name, never what a link there points at
        os.rename(tmp_name, target.name, src_dir_fd=target.dir_fd, dst_dir_fd=target.dir_fd)
    except BaseException:
        try:
            os.unlink(tmp_name, dir_fd=target.dir_fd)
        except OSError:
            pass
        raise
    if durable:
        _fsync_folder(target.dir_fd)


def _same_object(a: os.stat_result, b: os.stat_result) -> bool:
    return (stat.S_IFMT(a.st_mode), a.st_dev, a.st_ino, a.st_uid) == (stat.S_IFMT(b.st_mode), b.st_dev, b.st_ino,
                                                                      b.st_uid)


def _open_waiting_for_a_reader(target: _Target, flags: int, info: os.stat_result) -> int:
    """os.open of the target; a FIFO of our own that nobody reads yet gets a few seconds for its reader."""
    deadline = time.monotonic() + FIFO_READER_WAIT_S
    while True:
        try:
            return os.open(target.name, flags, dir_fd=target.dir_fd)
        except OSError as exc:
            if exc.errno != errno.ENXIO or not stat.S_ISFIFO(info.st_mode) or time.monotonic() >= deadline:
                raise
        time.sleep(0.02)  # a reader started beside the command may not have opened it yet


def _open_inspected(target: _Target, info: os.stat_result, flags: int, what: str) -> int:
    """Open the object ``info`` describes (never following a link, never blocking), or refuse when the name
    now holds something else. Returns a blocking descriptor."""
    flags |= os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC | (0 if target.descriptor else os.O_NOFOLLOW)
    try:
        fd = _open_waiting_for_a_reader(target, flags, info)
    except OSError as exc:
        if exc.errno == errno.ENXIO and stat.S_ISFIFO(info.st_mode):
            raise target.walk.error(f"is a FIFO that no process opened for reading in {FIFO_READER_WAIT_S:g} s "
                                    f"(writing it would wait forever); start its reader first, or") from None
        if exc.errno in (errno.ELOOP, errno.EMLINK):
            raise target.walk.error(f"was replaced by a symbolic link while being {what}; it was not used") \
                from None
        raise
    try:
        if not _same_object(os.fstat(fd), info):
            raise target.walk.error(f"changed while being {what} (another file was put under its name); it was "
                                    f"not used")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _write_in_place(target: _Target, content: Content, info: os.stat_result) -> None:
    """Write into the existing file, device or FIFO ``info`` describes (truncating a regular file)."""
    kind = stat.S_IFMT(info.st_mode)
    if kind not in (stat.S_IFREG, stat.S_IFIFO, stat.S_IFCHR, stat.S_IFBLK):
        raise target.walk.error("is a socket or other special file, which is never written")
    if kind != stat.S_IFREG and not target.descriptor and not _trusted(info.st_uid):
        raise target.walk.error(f"is a {'FIFO' if kind == stat.S_IFIFO else 'device'} that belongs to another user "
                                f"(uid {info.st_uid}); it is not written, since whoever made it chooses where the "
                                f"output goes. Remove it or")
    fd = _open_inspected(target, info, os.O_WRONLY, "written")
    with os.fdopen(fd, "wb") as handle:
        if kind == stat.S_IFREG:
            os.ftruncate(fd, 0)  # only now that the descriptor is known to be the file inspected
        _write_content(handle, content)


def write_output(path, content: Content, option: str = "--output", durable: bool = False) -> None:
    """Write ``content`` to the output the user named (see the module docstring for what that means)."""
    in_place = False
    try:
        with _resolve(path, option, follow_last=True) as target:
            info = target.lstat()  # the one inspection: what is written, replaced or refused is this object
            if info is not None and stat.S_ISDIR(info.st_mode):
                raise TransformerMTError(f"{option} {path} is a directory; give a file name, e.g. "
                                         f"{Path(path) / 'out.txt'}")
            in_place = info is not None and (not stat.S_ISREG(info.st_mode) or info.st_nlink > 1
                                              or target.descriptor or target.in_device_folder())
            if in_place:
                _write_in_place(target, content, info)
            else:
                _replace_atomically(target, content, info, durable)
    except OSError as exc:
        kept = "" if in_place else "; it was left as it was"
        raise TransformerMTError(f"could not write {option} {path}: {exc.strerror or exc}{kept}") from None


def check_output(path, option: str = "--output") -> None:
    """Refuse an output that cannot be written now (a foreign link, a missing or unwritable folder, a directory,
    a read-only file, a foreign FIFO or device), not after minutes of decoding."""
    with _resolve(path, option, follow_last=True) as target:
        info = target.lstat()
        if info is not None and stat.S_ISDIR(info.st_mode):
            raise TransformerMTError(f"{option} {path} is a directory; give a file name, e.g. "
                                     f"{Path(path) / 'out.txt'}")
        if info is not None and not stat.S_ISREG(info.st_mode):
            if not target.descriptor and not _trusted(info.st_uid):
                raise target.walk.error(f"is a FIFO or device that belongs to another user (uid {info.st_uid}); "
                                        f"it is not written. Remove it or")
            return  # a device, FIFO or /dev/stdout: written straight to, its directory does not matter
        if info is None or (info.st_nlink == 1 and not target.descriptor and not target.in_device_folder()):
            # through the folder's descriptor (/proc/self/fd/N), not its name from the top again
            if not os.access(f"/proc/self/fd/{target.dir_fd}", os.W_OK | os.X_OK):
                raise target.walk.error(f"directory {target.folder} is not writable")
        if info is not None and not os.access(f"/proc/self/fd/{target.dir_fd}/{target.name}", os.W_OK):
            raise TransformerMTError(f"{option} {path} is read-only; make it writable or choose another {option}")


def run_file_problem(path) -> str | None:
    """Why the run-directory file ``path`` must not be written (a link, a device...), or None."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return None
    return _run_file_problem(mode)


def _run_file_problem(mode: int) -> str | None:
    if stat.S_ISLNK(mode):
        return ("is a symbolic link; transformer-mt never writes through a link inside a run directory (it could "
                "point at any file). Remove the link (or put a regular file there) and run again")
    if not stat.S_ISREG(mode):
        return "is not a regular file (a directory, device, FIFO or socket); remove it and run again"
    return None


def write_run_file(path, content: Content, durable: bool = False, mode: int | None = None) -> None:
    """Replace the run-directory file ``path`` atomically with ``content`` (bytes, text, or a function
    that writes into a binary handle); refuse a link or non-file at ``path``.

    ``durable``: fsync the file and its directory (checkpoints: a crash must leave the old or the new one).
    ``mode``: a new file's mode (default: what a plain create gives, 0666 minus the umask).
    OSError escapes for the caller to explain (it knows what the file is for).
    """
    with _resolve(path) as target:
        old = target.lstat()
        problem = None if old is None else _run_file_problem(old.st_mode)
        if problem is not None:
            raise TransformerMTError(f"{path} {problem}")
        _replace_atomically(target, content, old, durable, mode)


_RUN_FILE_FLAGS = {"a": os.O_WRONLY | os.O_APPEND | os.O_CREAT, "a+": os.O_RDWR | os.O_APPEND | os.O_CREAT,
                   "r+": os.O_RDWR, "w": os.O_WRONLY | os.O_CREAT}


def open_run_file(path, mode: str = "a", encoding: str | None = "utf-8"):
    """Open the run-directory file ``path`` for appending ("a"/"ab"), updating ("r+"/"r+b"),
    locking ("a+") or writing anew ("w"), never through a symbolic link and never a device or FIFO.
    Open it once and keep the handle (metrics, logs): the walk is a few system calls per open."""
    flags = _RUN_FILE_FLAGS[mode.replace("b", "")]
    with _resolve(path) as target:
        try:
            # O_NONBLOCK: a FIFO planted under the name fails at once (ENXIO) instead of blocking the open.
            fd = os.open(target.name, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC, 0o666,
                         dir_fd=target.dir_fd)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENXIO):
                info = target._inspect()  # what made the open fail
                raise TransformerMTError(f"{path} {_run_file_problem(info.st_mode) if info else 'cannot be opened'}") \
                    from None
            raise
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            os.close(fd)
            raise TransformerMTError(f"{path} {_run_file_problem(info.st_mode)}")
        os.set_blocking(fd, True)
        if mode.startswith("w"):
            os.ftruncate(fd, 0)  # after the check: O_TRUNC at the open would truncate whatever was there
    return os.fdopen(fd, mode, encoding=None if "b" in mode else encoding)


def make_run_folder(path) -> Path:
    """Create the run-directory folder ``path`` (e.g. ``tensorboard/``), or accept the real folder that
    is there; refuse a link (the files written into it would land wherever it points) or a non-folder."""
    with _resolve(path) as target:
        try:
            os.mkdir(target.name, 0o777, dir_fd=target.dir_fd)  # never follows a link at the name
        except FileExistsError:
            pass
        mode = os.lstat(target.name, dir_fd=target.dir_fd).st_mode
    if stat.S_ISLNK(mode):
        raise TransformerMTError(f"{path} is a symbolic link; transformer-mt never writes through a link inside a run "
                                 f"directory (it could point at any folder). Remove the link and run again")
    if not stat.S_ISDIR(mode):
        raise TransformerMTError(f"{path} is not a folder (a file, device, FIFO or socket); remove it and run again")
    return Path(path)


def make_folders(path, option: str | None = None) -> Path:
    """Create the folder ``path`` and the folders on the way to it (``mkdir -p``), each by descriptor: a link of
    another user anywhere on the way is refused, so nothing is created where that user chose."""
    with _resolve_folder(path, option, create=True):
        pass
    return Path(path)


def make_temporary_folder(beside, mode: int = 0o700, prefix: str | None = None, option: str | None = None) -> Path:
    """A new folder next to ``beside`` (its folders created as :func:`make_folders` does), under an unpredictable
    name (``prefix`` + random, default ``.NAME.<random>.tmp``); for a directory written whole and then renamed
    into place with :func:`rename`."""
    with _resolve(beside, option, create_folders=True) as target:
        for _ in range(100):
            name = (f"{prefix}{secrets.token_hex(6)}" if prefix is not None
                    else f".{target.name[:200]}.{secrets.token_hex(6)}.tmp")
            try:
                os.mkdir(name, 0o700, dir_fd=target.dir_fd)
            except FileExistsError:
                continue
            if mode != 0o700:
                fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=target.dir_fd)
                try:
                    os.fchmod(fd, mode)
                finally:
                    os.close(fd)
            return Path(os.path.dirname(os.fspath(beside))) / name
    raise FileExistsError(errno.EEXIST, "no free temporary name", os.fspath(beside))


def rename(source, destination, option: str | None = None) -> None:
    """Rename ``source`` to ``destination`` (both resolved by descriptor; neither last name followed), as
    ``os.rename``: a file replaces a file, a folder replaces an empty folder."""
    with _resolve(source, option) as src, _resolve(destination, option) as dst:
        os.rename(src.name, dst.name, src_dir_fd=src.dir_fd, dst_dir_fd=dst.dir_fd)
        _fsync_folder(dst.dir_fd)


def sync_folder(path) -> None:
    """fsync the folder ``path`` (resolved by descriptor), so that what was renamed into it survives a crash."""
    with _resolve_folder(path) as walked:
        _fsync_folder(walked)


def remove_empty_folder(path, option: str | None = None) -> None:
    """``rmdir`` the folder ``path`` (resolved by descriptor); an error if it is not an empty folder."""
    with _resolve(path, option) as target:
        os.rmdir(target.name, dir_fd=target.dir_fd)


def check_no_foreign_link(path, option: str | None = None) -> None:
    """Refuse ``path`` when a symbolic link of another user stands anywhere on it (its last name included), as
    every read here does; a missing path is the caller's to report."""
    try:
        with _resolve(path, option, follow_last=True):
            pass
    except _PathProblem as exc:  # missing or not a folder on the way: said by the caller; a loop is said here
        if exc.errno == errno.ELOOP:
            raise


def remove(path, option: str | None = None, ignore_errors: bool = False) -> None:
    """Delete ``path``, a file, a link (itself, never what it points to) or a whole folder (``rm -r``), resolved
    by descriptor: a folder on the way renamed or swapped for a link cannot turn it elsewhere. Nothing to do
    when it is missing; other errors are raised (OSError) unless ``ignore_errors``."""
    try:
        with _resolve(path, option) as target:
            info = target.lstat()
            if info is None:
                return
            if stat.S_ISDIR(info.st_mode):
                # rmtree goes on below by descriptor itself; /proc/self/fd/N is the folder resolved above
                shutil.rmtree(f"/proc/self/fd/{target.dir_fd}/{target.name}", ignore_errors=ignore_errors)
            else:
                os.unlink(target.name, dir_fd=target.dir_fd)
    except (FileNotFoundError, _Missing):
        pass
    except (OSError, TransformerMTError):
        if not ignore_errors:
            raise


@contextlib.contextmanager
def held_folder(path, option: str | None = None) -> Iterator[str]:
    """A folder for a library that writes files in it by name (TensorBoard's SummaryWriter, CTranslate2's
    ``spec.save``): ``path`` created as :func:`make_folders` does, then held open and handed over as
    ``/proc/self/fd/N``, a name for that very folder whatever is renamed or swapped on the way to it later. It must
    belong to the caller and not be writable by everyone, so nobody else can plant a link inside it either."""
    with _resolve_folder(path, option, create=True) as walked:
        fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=walked)
    try:
        _check_own_folder(fd, path, option)
        yield f"/proc/self/fd/{fd}"
    finally:
        os.close(fd)


def _check_own_folder(fd: int, path, option: str | None) -> None:
    info = os.fstat(fd)
    if info.st_uid != os.geteuid() or info.st_mode & stat.S_IWOTH:
        whose = "belongs to another user" if info.st_uid != os.geteuid() else "everyone may write to"
        raise _Walk(path, option).error(f"is a folder that {whose}, so the files in it could be swapped for links "
                                        f"or for files of theirs; use a folder of your own, or")


def _check_folders_above(fd: int, path, option: str | None) -> None:
    """Every folder that holds the folder ``fd``, up to /, as the kernel has them (links already followed): each
    must be the caller's or root's, and one that everyone may write to must be sticky (as /tmp is). Otherwise its
    owner, or anyone, could rename the folder below away and put their own in its place (sshd's StrictModes)."""
    current = os.dup(fd)
    try:
        while True:
            parent = os.open("..", _DIR_FLAGS, dir_fd=current)
            here, above = os.fstat(current), os.fstat(parent)
            os.close(current)
            current = parent
            if (above.st_dev, above.st_ino) == (here.st_dev, here.st_ino):  # the root
                return
            # Group-writable is left alone: with umask 002 every folder a user makes is (for their own group).
            shared = above.st_mode & stat.S_IWOTH and not above.st_mode & stat.S_ISVTX
            if _trusted(above.st_uid) and not shared:
                continue
            why = (f"belongs to another user (uid {above.st_uid})" if not _trusted(above.st_uid)
                   else "everyone may write to, without the sticky bit")
            raise _Walk(path, option).error(f"the folder {_fd_path(parent) or '..'} that holds it {why}, who could "
                                            f"rename it away and put a folder of theirs in its place; use a folder "
                                            f"of your own, or")
    finally:
        os.close(current)


def make_own_folder(path, option: str | None = None) -> Path:
    """Create ``path`` as :func:`make_folders` does and check that it is the caller's own, that not everyone may
    write to it, and that no folder above it lets another user swap it: a run directory is written for hours and
    its checkpoints are read back later, so nobody else may be able to rename them (or it) away and put their own
    files in their place."""
    with _resolve_folder(path, option, create=True) as walked:
        _check_own_folder(walked, path, option)
        _check_folders_above(walked, path, option)
    return Path(path)


def check_output_folder(path, option: str = "--output") -> None:
    """Refuse a link of another user anywhere on the way to the output folder ``path`` (itself included); the
    part that does not exist yet is the caller's to report or create."""
    try:
        with _resolve_folder(path, option):
            pass
    except _PathProblem as exc:  # missing, a file, closed: the caller's checks say it in their words
        if exc.errno == errno.ELOOP:
            raise


def output_target(path, option: str = "--output") -> tuple[Path, os.stat_result | None]:
    """Where writing ``--output path`` goes now (links followed as described above) and what is there now.

    Raises a clear error for a link loop, a foreign link, a directory, or a missing directory. Only for
    messages and early checks: writing resolves the path again (write_output).
    """
    with _resolve(path, option, follow_last=True) as target:
        info = target.lstat()
        where = Path(os.fspath(path)) if target.descriptor else target.path
    if info is not None and stat.S_ISDIR(info.st_mode):
        raise TransformerMTError(f"{option} {path} is a directory; give a file name, e.g. {Path(path) / 'out.txt'}")
    return where, info


def in_device_folder(path) -> bool:
    """Whether ``path`` lies (links resolved) in /dev or /proc, the folders of devices and process streams."""
    return (os.path.realpath(Path(path).parent) + "/").startswith(_STREAM_FOLDERS)


def written_straight(target: Path, info: os.stat_result | None) -> bool:
    """Whether an output at ``target`` is opened and written to rather than replaced (see above)."""
    if info is None:
        return False
    return not stat.S_ISREG(info.st_mode) or in_device_folder(target)


# --- reading -------------------------------------------------------------------------------------------------

class NotARegularFile(OSError):
    """Raised by :func:`read_regular_file` for a FIFO, device, socket or directory."""


def open_regular_file(path) -> BinaryIO:
    """``path`` opened for reading in binary, refused (NotARegularFile) unless it is a regular file. It is
    resolved as everything else (a link of another user is refused), and the open itself never blocks: a FIFO
    planted where a run file or cache file belongs would otherwise hang it."""
    try:
        with _resolve(path, follow_last=True) as target:
            fd = _open_for_reading(target, path)
    except _PathProblem as exc:  # a missing folder on the way reads as the OSError callers expect
        raise OSError(exc.errno, os.strerror(exc.errno), os.fspath(path)) from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise NotARegularFile(errno.EINVAL, "not a regular file (a directory, device, FIFO or socket)", str(path))
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def _open_for_reading(target: _Target, path) -> int:
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY | (0 if target.descriptor else os.O_NOFOLLOW)
    try:
        return os.open(target.name, flags, dir_fd=target.dir_fd)
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, os.fspath(path)) from None


def open_for_reading(path, option: str | None = None, wait_for_a_writer: bool = True) -> BinaryIO:
    """A user's file (a corpus, an input, a checkpoint) opened for reading bytes, resolved as everything else (a
    link of another user is refused). A regular file is opened whoever owns it; a FIFO or device only when it is
    the caller's or root's, or one of the process's own descriptors (``/dev/stdin``, ``<(...)``), and its open
    never blocks; a FIFO then waits for its writer (``wait_for_a_writer``), as a shell's ``<`` does, unless the
    caller refuses anything but a regular file anyway. OSError as ``open`` raises it."""
    try:
        with _resolve(path, option, follow_last=True) as target:
            info = target.lstat()
            if info is None:
                raise FileNotFoundError(errno.ENOENT, "No such file or directory", os.fspath(path))
            if stat.S_ISDIR(info.st_mode):
                raise IsADirectoryError(errno.EISDIR, "Is a directory", os.fspath(path))
            if not stat.S_ISREG(info.st_mode) and not target.descriptor and not _trusted(info.st_uid):
                raise target.walk.error(f"is a FIFO, device or socket that belongs to another user (uid "
                                        f"{info.st_uid}); it is not read, since whoever made it chooses what it "
                                        f"gives. Remove it or")
            fd = _open_inspected(target, info, os.O_RDONLY, "read")
    except _PathProblem as exc:  # a missing folder on the way reads as the OSError callers expect
        raise OSError(exc.errno, os.strerror(exc.errno), os.fspath(path)) from None
    if stat.S_ISFIFO(info.st_mode) and wait_for_a_writer:
        fd = _wait_for_a_writer(fd)
    return os.fdopen(fd, "rb")


def _wait_for_a_writer(fd: int) -> int:
    """Wait until the FIFO open in ``fd`` has data or its writer has come and gone, then return ``fd``.

    It was opened without blocking (so that the object could be inspected before anything waits on it), and a
    read then finds no writer yet and reads as empty: a writer started late would give nothing. ``poll``
    waits for data, or for the hang-up of a writer that opened since (Linux reports no hang-up for a FIFO
    nobody has written to yet), which is what cat's blocking open and reads give. (A pipe, as ``/dev/stdin``
    is, had its writer when it was made: it answers at once, with data or the end.)"""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    poller.poll()
    return fd


def read_regular_file(path, limit: int) -> bytes:
    """The bytes of the regular file ``path`` (see :func:`open_regular_file`), at most ``limit`` of them (see
    :func:`read_within`)."""
    with open_regular_file(path) as handle:
        return read_within(handle, limit, str(path), "it is not the file that belongs there: remove it, or copy "
                                                     "the whole directory again")


def amount(size: int) -> str:
    """A number of bytes as people read it: 512 bytes, 3.5 MiB, 6 GiB."""
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if size >= 1 << shift:
            return f"{size / (1 << shift):.3g} {unit}"
    return f"{size:,} bytes"


def read_within(handle: BinaryIO, limit: int, name: str, fix: str) -> bytes:
    """THE bound on what is read into memory whole: everything a file the user named gives (a regular file,
    a FIFO, a device, standard input) is read here, with the limit its caller sets for that kind of file.

    A regular file larger than ``limit`` is refused from its size before a byte is read; anything else is
    read until EOF or ``limit + 1`` bytes, and refused at the byte past the limit (never read whole into
    memory, whatever it is). The error names ``name`` (the option and path, "--input big.txt"), the size
    (or "more than"), the limit, and ``fix``.
    """
    try:
        info = os.fstat(handle.fileno())
    except (OSError, ValueError, AttributeError):  # a handle without a descriptor (BytesIO)
        info = None
    if info is not None and stat.S_ISREG(info.st_mode) and info.st_size > limit:
        raise TransformerMTError(f"{name} is {amount(info.st_size)}, more than the {amount(limit)} read at "
                                 f"most; {fix}")
    chunks, size = [], 0
    try:
        while size <= limit:
            chunk = handle.read(min(limit + 1 - size, 1 << 24))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise TransformerMTError(f"{name} cannot be read: {exc.strerror or exc}") from None
    if size > limit:
        raise TransformerMTError(f"{name} gives more than the {amount(limit)} read at most; {fix}")
    return b"".join(chunks)


def regular_file_problem(path) -> str | None:
    """What keeps ``path`` from being read as a regular file ("is a directory", ...), or None."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "is a symbolic link loop"
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            return "is a symbolic link to a missing file" if os.path.islink(path) else "does not exist"
        return f"cannot be accessed ({exc.strerror})"
    if stat.S_ISDIR(mode):
        return "is a directory, expected a file"
    if not stat.S_ISREG(mode):
        return "is not a regular file (a device, FIFO or socket), expected a file"
    return None


def discard_stdout() -> None:
    """Point file descriptor 1 at /dev/null (after a write to standard output failed), so that Python's own
    flush when it exits does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass


def open_user_file(path, what: str) -> BinaryIO:
    """The regular file ``path`` opened for reading through the resolver (never through another user's link),
    and checked on the opened descriptor: a FIFO, device or socket swapped in after any earlier look by name
    is refused, not read (a FIFO would block for good). ``what`` names the file in messages ("checkpoint")."""
    try:
        handle = open_for_reading(path, wait_for_a_writer=False)  # anything but a regular file is refused below
    except OSError as exc:
        raise TransformerMTError(f"{what} {path} cannot be read: {exc.strerror or exc}") from None
    info = os.fstat(handle.fileno())
    if not stat.S_ISREG(info.st_mode):
        handle.close()
        raise TransformerMTError(f"{what} {path} is not a regular file (a FIFO, device or socket); give a file")
    return handle


def read_user_file(path, what: str, *, limit: int, fix: str = "is it the right file?") -> bytes:
    """The bytes of the regular file ``path`` (see :func:`open_user_file`), at most ``limit`` of them (see
    :func:`read_within`: a larger file is refused, never read whole); ``what`` names it in messages."""
    with open_user_file(path, what) as handle:
        return read_within(handle, limit, f"{what} {path}", fix)
