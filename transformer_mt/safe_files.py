"""The one way transformer-mt writes a file, so that a write cannot be turned against the user.

Two kinds of destination, two rules:

- A file of a **run directory** (checkpoints, config.yaml, run.json, train.log, metrics.jsonl,
  plots, .lock): run directories are copied and shared, so whoever prepared one may have put a
  symbolic link where a run file goes. Such a file is never written through a link and never
  a device or FIFO: ``write_run_file``/``open_run_file`` refuse both with a clear error.
- An **output the user named** (``translate --output``, ``evaluate --output``, ``average
  --output``): ``write_output`` writes where the user pointed, as a shell's ``>`` would, with
  these differences:

  * a regular file is replaced atomically: the new content goes to a temporary file made with
    ``tempfile.mkstemp`` (an unpredictable name opened with ``O_EXCL``, so nobody can plant a
    link under its name) in the same directory, which is then renamed over it. A failure or
    Ctrl-C midway leaves the old file as it was. The replacement keeps the old file's mode, and
    when run by root, its owner and group (root writing a user's file must not take it over);
  * a file with several hard links is written in place (truncated and rewritten), so every name
    still shows the same content, as after ``>``; it is then not atomic;
  * anything that is not a regular file (a character device such as ``/dev/null``, a FIFO, a
    terminal, ``/dev/stdout``) is opened and written straight to, never renamed over;
  * a symbolic link is followed only when it belongs to the user running the command or to root
    (like ``/dev/stdout``): a link that another user planted in a shared directory is refused,
    since it could point at any file the command may write.

Reading is not this module's business, except that ``open_regular_file``/``read_regular_file``
open a file without blocking and refuse anything but a regular file (a FIFO planted where a run or
cache file belongs would hang the open), and ``regular_file_problem`` names what keeps a path from
being read as a file (a device that never ends, a FIFO that blocks).
"""

from __future__ import annotations

import errno
import os
import re
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from .errors import TransformerMTError

Content = bytes | str | Callable[[BinaryIO], None]

MAX_LINK_HOPS = 40  # as the kernel's limit; more is a loop
# Paths whose files are the process's streams or the system's devices: written straight, never replaced.
_STREAM_FOLDERS = ("/dev/", "/proc/")


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


def _write_content(handle: BinaryIO, content: Content) -> None:
    if callable(content):
        content(handle)
    else:
        handle.write(content.encode("utf-8") if isinstance(content, str) else content)


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return  # not every file system lets a directory be opened; the rename is done either way
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _replace_atomically(path: Path, content: Content, old: os.stat_result | None, durable: bool) -> None:
    """Write ``content`` to a fresh mkstemp file beside ``path`` and rename it over ``path``."""
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            _write_content(handle, content)
            handle.flush()
            if old is not None:
                os.fchmod(handle.fileno(), stat.S_IMODE(old.st_mode))
                if os.geteuid() == 0:
                    os.fchown(handle.fileno(), old.st_uid, old.st_gid)
            else:
                os.fchmod(handle.fileno(), 0o666 & ~current_umask())  # what a plain create gives
            if durable:
                os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except OSError:
            pass
        raise
    if durable:
        _fsync_directory(path.parent)


def _write_straight(path: Path, content: Content, truncate: bool) -> None:
    """Open an existing file, device or FIFO for writing (never creating, never following a last link)."""
    flags = os.O_WRONLY | os.O_NOCTTY | os.O_CLOEXEC | (os.O_TRUNC if truncate else 0)
    fd = os.open(path, flags)
    with os.fdopen(fd, "wb") as handle:
        _write_content(handle, content)


def run_file_problem(path: Path) -> str | None:
    """Why the run-directory file ``path`` must not be written (a link, a device...), or None."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(mode):
        return ("is a symbolic link; transformer-mt never writes through a link inside a run directory (it could "
                "point at any file). Remove the link (or put a regular file there) and run again")
    if not stat.S_ISREG(mode):
        return "is not a regular file (a directory, device, FIFO or socket); remove it and run again"
    return None


def write_run_file(path, content: Content, durable: bool = False) -> None:
    """Replace the run-directory file ``path`` atomically with ``content`` (bytes, text, or a function
    that writes into a binary handle); refuse a link or non-file at ``path``.

    ``durable``: fsync the file and its directory (checkpoints: a crash must leave the old or the new one).
    OSError escapes for the caller to explain (it knows what the file is for).
    """
    path = Path(path)
    problem = run_file_problem(path)
    if problem is not None:
        raise TransformerMTError(f"{path} {problem}")
    try:
        old = os.lstat(path)
    except FileNotFoundError:
        old = None
    _replace_atomically(path, content, old, durable)


def open_run_file(path, mode: str = "a", encoding: str | None = "utf-8"):
    """Open the run-directory file ``path`` for appending ("a"/"ab"), updating ("r+"/"r+b"),
    locking ("a+") or writing anew ("w"), never through a symbolic link and never a device or FIFO."""
    path = Path(path)
    flags = {"a": os.O_WRONLY | os.O_APPEND | os.O_CREAT, "a+": os.O_RDWR | os.O_APPEND | os.O_CREAT,
             "r+": os.O_RDWR, "w": os.O_WRONLY | os.O_CREAT | os.O_TRUNC}[mode.replace("b", "")]
    try:
        # O_NONBLOCK: a FIFO planted under the name fails at once (ENXIO) instead of blocking the open.
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o666)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENXIO):
            raise TransformerMTError(f"{path} {run_file_problem(path) or 'cannot be opened'}") from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise TransformerMTError(f"{path} {run_file_problem(path)}")
    os.set_blocking(fd, True)
    return os.fdopen(fd, mode, encoding=None if "b" in mode else encoding)


def make_run_folder(path) -> Path:
    """Create the run-directory folder ``path`` (e.g. ``tensorboard/``), or accept the real folder that
    is there; refuse a link (the files written into it would land wherever it points) or a non-folder."""
    path = Path(path)
    try:
        os.mkdir(path)  # never follows a link at ``path``: a planted one makes this fail with EEXIST
    except FileExistsError:
        pass
    mode = os.lstat(path).st_mode
    if stat.S_ISLNK(mode):
        raise TransformerMTError(f"{path} is a symbolic link; transformer-mt never writes through a link inside a run "
                                 f"directory (it could point at any folder). Remove the link and run again")
    if not stat.S_ISDIR(mode):
        raise TransformerMTError(f"{path} is not a folder (a file, device, FIFO or socket); remove it and run again")
    return path


def _foreign_link_problem(link: Path, info: os.stat_result, path: Path, option: str) -> TransformerMTError:
    return TransformerMTError(
        f"{option} {path}: {link} is a symbolic link that belongs to another user (uid {info.st_uid}); "
        f"it is not followed, since whoever made it chooses which file gets overwritten. Remove it or "
        f"choose another {option}")


def _check_folder_links(folder: Path, path: Path, option: str) -> None:
    """Refuse a link of another user anywhere on the way to ``folder`` (e.g. ``/tmp/shared`` planted as a
    link to the victim's home): the kernel's protected_symlinks guards only some of these, and not everywhere."""
    current = Path("/") if folder.is_absolute() else Path.cwd()
    pending = list(folder.parts)
    hops = 0
    while pending:
        part = pending.pop(0)
        if part == "/":
            current = Path("/")
            continue
        if part in ("", "."):
            continue
        if part == "..":
            current = current.parent
            continue
        candidate = current / part
        try:
            info = os.lstat(candidate)
        except OSError:  # missing: the caller reports a missing directory
            return
        if stat.S_ISLNK(info.st_mode):
            if info.st_uid not in (os.geteuid(), 0):
                raise _foreign_link_problem(candidate, info, path, option)
            hops += 1
            if hops > MAX_LINK_HOPS:
                raise TransformerMTError(f"{option} {path} is a symbolic link loop; choose another {option}")
            pending = list(Path(os.readlink(candidate)).parts) + pending
            continue
        current = candidate


def check_output_folder(path, option: str = "--output") -> None:
    """Refuse a link of another user anywhere on the way to the output folder ``path`` (itself included)."""
    _check_folder_links(Path(path), Path(path), option)


def _follow_output_links(path: Path, option: str) -> tuple[Path, os.stat_result | None]:
    """The file an --output link chain ends at, and its lstat (None when it does not exist)."""
    current = path
    for _ in range(MAX_LINK_HOPS):
        _check_folder_links(current.parent, path, option)
        try:
            info = os.lstat(current)
        except (FileNotFoundError, NotADirectoryError):  # the caller reports a missing or non-directory parent
            return current, None
        if not stat.S_ISLNK(info.st_mode):
            return current, info
        # Whoever owns a link chooses where it points: the owner is checked before anything else, whatever the
        # path looks like (/dev/.., /proc/self/cwd and /dev/shm reach any folder).
        if info.st_uid not in (os.geteuid(), 0):
            raise _foreign_link_problem(current, info, path, option)
        if _is_descriptor_link(current):
            # /dev/stdout -> /proc/self/fd/1 -> "pipe:[...]": the kernel opens the descriptor's file, which
            # the text of the link does not name; the link is the process's own.
            try:
                return current, os.stat(current)
            except FileNotFoundError:
                return current, None
        current = current.parent / os.readlink(current)
    raise TransformerMTError(f"{option} {path} is a symbolic link loop; choose another {option}")


def output_target(path, option: str = "--output") -> tuple[Path, os.stat_result | None]:
    """Where writing ``--output path`` goes (links followed as described above) and what is there now.

    Raises a clear error for a link loop, a foreign link, a directory, or a missing directory.
    """
    path = Path(path)
    try:
        target, info = _follow_output_links(path, option)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise TransformerMTError(f"{option} {path} is a symbolic link loop; choose another {option}") from None
        raise TransformerMTError(f"{option} {path} cannot be used: {exc.strerror}") from None
    if info is not None and stat.S_ISDIR(info.st_mode):
        raise TransformerMTError(f"{option} {path} is a directory; give a file name, e.g. {path / 'out.txt'}")
    return target, info


def _is_descriptor_link(path: Path) -> bool:
    """Whether ``path`` is an entry of a process's /proc/<pid>/fd folder (a link to an open file)."""
    return re.fullmatch(r"/proc/(\d+|self|thread-self)(/task/\d+)?/fd", os.path.realpath(path.parent)) is not None


def in_device_folder(path) -> bool:
    """Whether ``path`` lies (links resolved) in /dev or /proc, the folders of devices and process streams."""
    return (os.path.realpath(Path(path).parent) + "/").startswith(_STREAM_FOLDERS)


def written_straight(target: Path, info: os.stat_result | None) -> bool:
    """Whether an output at ``target`` is opened and written to rather than replaced (see above)."""
    if info is None:
        return False
    return not stat.S_ISREG(info.st_mode) or in_device_folder(target)


def write_output(path, content: Content, option: str = "--output", durable: bool = False) -> None:
    """Write ``content`` to the output the user named (see the module docstring for what that means)."""
    target, info = output_target(path, option)
    try:
        if written_straight(target, info):
            _write_straight(target, content, truncate=stat.S_ISREG(info.st_mode))
        elif info is not None and info.st_nlink > 1:
            _write_straight(target, content, truncate=True)  # keeps every hard link showing the new content
        else:
            _replace_atomically(target, content, info, durable)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise TransformerMTError(f"{option} {path} is a symbolic link loop; choose another {option}") from None
        kept = "" if info is not None and (info.st_nlink > 1 or not stat.S_ISREG(info.st_mode)) \
            else "; it was left as it was"
        raise TransformerMTError(f"could not write {option} {path}: {exc.strerror or exc}{kept}") from None


class NotARegularFile(OSError):
    """Raised by :func:`read_regular_file` for a FIFO, device, socket or directory."""


def open_regular_file(path) -> BinaryIO:
    """``path`` opened for reading in binary, refused (NotARegularFile) unless it is a regular file. The open
    itself never blocks: a FIFO planted where a run file or cache file belongs would otherwise hang it."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise NotARegularFile(errno.EINVAL, "not a regular file (a directory, device, FIFO or socket)", str(path))
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def read_regular_file(path) -> bytes:
    """The bytes of the regular file ``path`` (see :func:`open_regular_file`)."""
    with open_regular_file(path) as handle:
        return handle.read()


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
