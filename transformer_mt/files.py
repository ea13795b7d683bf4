"""Two plain facts about a file that the config, the tokenizer, checkpoints and imports all ask: what keeps
a path from being read as a regular file (said in words for a message), and its SHA-256."""

from __future__ import annotations

import errno
import hashlib
import stat
from pathlib import Path

from .safe_files import open_for_reading


def file_problem(path: Path, expected: str = "a text file") -> str | None:
    """What keeps ``path`` from being read as a regular file (``expected`` names what it should be), or None."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "is a symbolic link loop"
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            return "is a symbolic link to a missing file" if path.is_symlink() else "does not exist"
        return f"cannot be accessed ({exc.strerror})"
    if stat.S_ISDIR(mode):
        return f"is a directory, expected {expected}"
    if not stat.S_ISREG(mode):
        return f"is not a regular file (a device, pipe or socket), expected {expected}"
    return None  # an unreadable file is reported when it is read


def file_sha256(path) -> str:
    digest = hashlib.sha256()
    with open_for_reading(path, wait_for_a_writer=False) as handle:  # a hash is of a regular file: never waits on a FIFO
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
