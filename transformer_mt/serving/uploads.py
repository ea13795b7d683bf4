"""Translated files waiting for their download (LibreTranslate's /translate_file then /download_file).

Nothing a client sends becomes a path: each file is written under a random name in a private temporary
directory (mode 700, files 600), and a download id is only a key of this store's table, never joined to a
directory, so no id can name another file. Files are removed after ``ttl_s`` seconds, the oldest first when
more than ``max_files`` wait, and all of them when the server stops.
"""

from __future__ import annotations

import re
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from ..safe_files import read_regular_file, remove, write_run_file

# What a download name keeps of a client's file name: letters, digits, '.', '-' and '_' (no separators).
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_download_name(filename: str, extension: str) -> str:
    """A name for the Content-Disposition header: the last part of ``filename``, reduced to safe characters."""
    base = re.split(r"[\\/]", filename)[-1]
    base = _UNSAFE.sub("_", base).strip("._")[:100]
    if not base.lower().endswith(extension):
        base = (base or "translated") + extension
    return base


@dataclass
class _Stored:
    path: Path
    size: int  # bytes written: what is read back, at most
    download_name: str
    media_type: str
    created: float


class TranslatedFiles:
    """A table of translated files by download id, with their bytes in a private directory."""

    def __init__(self, ttl_s: float = 1800.0, max_files: int = 100):
        self.ttl_s, self.max_files = ttl_s, max_files
        self.directory = Path(tempfile.mkdtemp(prefix="transformer-mt-files-"))  # mode 700
        self.files: dict[str, _Stored] = {}
        self.lock = threading.Lock()

    def put(self, data: bytes, download_name: str, media_type: str) -> str:
        """Store ``data``; returns its download id (``<32 hex digits>.<download_name>``)."""
        key = uuid.uuid4().hex
        path = self.directory / key
        # A fresh file renamed into the private folder: never through a link planted under the name.
        write_run_file(path, data, mode=0o600)
        download_id = f"{key}.{download_name}"
        with self.lock:
            self.files[download_id] = _Stored(path, len(data), download_name, media_type, time.monotonic())
            while len(self.files) > self.max_files:
                self._remove(next(iter(self.files)))  # dicts keep insertion order: the oldest first
        return download_id

    def get(self, download_id: str) -> tuple[bytes, str, str] | None:
        """(bytes, download name, media type) of a stored file, or None (unknown or expired)."""
        self.purge()
        with self.lock:
            stored = self.files.get(download_id)
            if stored is None:
                return None
            return read_regular_file(stored.path, stored.size), stored.download_name, stored.media_type

    def purge(self) -> None:
        """Remove the files older than ``ttl_s``."""
        now = time.monotonic()
        with self.lock:
            for download_id in [k for k, v in self.files.items() if now - v.created > self.ttl_s]:
                self._remove(download_id)

    def _remove(self, download_id: str) -> None:
        stored = self.files.pop(download_id)
        remove(stored.path, ignore_errors=True)

    def close(self) -> None:
        with self.lock:
            self.files.clear()
            remove(self.directory, ignore_errors=True)
