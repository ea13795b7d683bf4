"""Parallel corpora: text files -> token ids in memory-mapped arrays.

Reading checks what commonly goes wrong with parallel text: files of
different line counts, invalid UTF-8 (reported with its line), and empty or
over-long pairs, which are dropped *as pairs* (never one side only, which
would shift the alignment) and counted.

A corpus of millions of pairs never has to fit in memory as Python objects:
the files are read ``CHUNK_LINES`` lines at a time, each chunk is tokenized
by SentencePiece's own threads, and its ids are appended to ``.npy`` files.
The finished arrays are mapped read-only, so training reads the pages of the
sentences it batches and the kernel may drop them again.

An encoded corpus is cached in a directory named after the files and a hash
of their bytes, the tokenizers and the options, so tokenization happens once
per corpus. A cache entry is built in a temporary directory and renamed into
place when complete, so a crash never leaves one that looks finished; an
``flock`` per entry lets several processes (the ranks of a multi-GPU run)
prepare the same corpus at once: one builds it, the others wait and map it.
A damaged entry is rebuilt, with a warning.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import itertools
import logging
import mmap
import os
import random
import stat
import tempfile
import time
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ..errors import TransformerMTError
from ..safe_files import (
    make_folders,
    make_temporary_folder,
    open_for_reading,
    open_regular_file,
    open_run_file,
    read_within,
    remove,
    rename,
    sync_folder,
    write_run_file,
)
from .tokenizer import Tokenizer
from .tokenizer_files import MAX_MODEL_BYTES

log = logging.getLogger(__name__)

# Lines read, tokenized and written at a time. A chunk's Python objects take ~2 KB per pair
# (mostly the ids as Python ints before they become an int32 array), so 20k lines stay near
# 40 MB; larger chunks measured no faster, SentencePiece's threads have enough work either way.
CHUNK_LINES = 20_000
# Part of the cache key: a change in what a cache entry holds gets new entries, never old ones.
CACHE_FORMAT = b"transformer-mt corpus cache 2"
CACHE_ARRAYS = ("src_ids", "src_offsets", "tgt_ids", "tgt_offsets")
# What a cache entry built with text_index=True holds besides (see TextIndex): a key of its own, so entries
# without it (every corpus when subword sampling is off) stay exactly what they were.
TEXT_INDEX_ARRAYS = ("pair_lines", "src_line_starts", "tgt_line_starts")
BYTE_ORDER_MARK = "\ufeff"
# Text read whole (an --input, --hyp and --ref, a validation or test set, standard input) becomes Python
# strings of several times its bytes: more than this is refused, with the advice to split it. Training corpora
# are read in chunks (iter_line_chunks) and have no such bound.
MAX_TEXT_BYTES = 1 << 30
SPLIT_IT = "split it into smaller files (e.g. split -l 1000000) and give them one at a time"


# Reading text files

def _endless_device(handle) -> bool:
    """A device that is no terminal and not /dev/null (e.g. /dev/zero, a disk): reading it never ends
    or reads gigabytes. Pipes, FIFOs and a terminal (/dev/stdin) end when the writer says so."""
    mode = os.fstat(handle.fileno())
    if stat.S_ISBLK(mode.st_mode):
        return True
    return stat.S_ISCHR(mode.st_mode) and not handle.isatty() and mode.st_rdev != os.makedev(1, 3)


def open_binary(path: Path) -> BinaryIO:
    """``path`` opened for reading bytes, with clear errors."""
    try:
        handle = open_for_reading(path)  # by descriptor: never through another user's link
        if _endless_device(handle):
            handle.close()
            raise TransformerMTError(f"{path} is a device, not a text file (reading it might never end); "
                                     f"give a text file")
        return handle
    except FileNotFoundError:
        raise TransformerMTError(f"file {path} does not exist") from None
    except IsADirectoryError:
        raise TransformerMTError(f"{path} is a directory, expected a text file") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise TransformerMTError(f"file {path} is a symbolic link loop; point it at a real file") from None
        raise TransformerMTError(f"file {path} cannot be read: {exc.strerror}") from None


def read_bytes(path: Path, option: str | None = None, limit: int = MAX_TEXT_BYTES, fix: str = SPLIT_IT) -> bytes:
    """The contents of a file, at most ``limit`` bytes (safe_files.read_within), with clear errors naming
    ``option`` (e.g. "--input") where the file came from one."""
    with open_binary(Path(path)) as handle:
        return read_within(handle, limit, f"{option or 'file'} {path}", fix)


def _not_utf8(path: Path, line: int, parallel: bool) -> TransformerMTError:
    # Of a parallel corpus, a line is dropped from both files or neither (else the pairs shift).
    remove = "remove that line from both files" if parallel else "remove that line"
    return TransformerMTError(
        f"file {path} is not valid UTF-8: line {line} has an invalid byte sequence; "
        f"convert the file to UTF-8 (e.g. iconv -f LATIN1 -t UTF-8) or {remove}"
    )


def _decode(data: bytes, path: Path, first_line: int, parallel: bool = False) -> str:
    """``data`` (whole lines of ``path``, starting at line ``first_line``) as text; ``parallel``: ``path`` is one
    side of a parallel corpus."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _not_utf8(path, first_line + data.count(b"\n", 0, exc.start), parallel) from None


def _split_at_newlines(text: str) -> list[str]:
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if "\r" in text:
        lines = [line.rstrip("\r") for line in lines]
    return lines


def split_lines(text: str) -> list[str]:
    """Text as lines, the way every input is split (files, standard input): at "\n" only.

    str.splitlines would also split at \x0b, \x1c, \x85, \u2028 ..., which may stand inside a
    sentence, shift parallel pairs out of alignment and give more output lines than input lines.
    A BOM, trailing "\r"s (CRLF files) and the empty piece after a final newline go.
    """
    if text.startswith(BYTE_ORDER_MARK):
        text = text[1:]
    return _split_at_newlines(text)


def read_lines(path, option: str | None = None, parallel: bool = False, limit: int = MAX_TEXT_BYTES,
               fix: str = SPLIT_IT) -> list[str]:
    """Read a UTF-8 text file as a list of lines (without newlines), with clear errors (naming ``option``, the
    command-line option it came from, if given); at most ``limit`` bytes of it (see read_bytes)."""
    path = Path(path)
    return split_lines(_decode(read_bytes(path, option, limit, fix), path, 1, parallel))


def iter_line_chunks(path, chunk_lines: int = CHUNK_LINES, parallel: bool = False) -> Iterator[list[str]]:
    """The lines of a UTF-8 text file exactly as :func:`read_lines` gives them, ``chunk_lines`` at a time."""
    path = Path(path)
    with open_binary(path) as handle:
        first_line = 1
        # Iterating a binary file splits at b"\n" only, and a b"\n" byte never stands inside a
        # multi-byte UTF-8 character: every chunk decodes on its own.
        while raw := list(itertools.islice(handle, chunk_lines)):
            text = _decode(b"".join(raw), path, first_line, parallel)
            yield split_lines(text) if first_line == 1 else _split_at_newlines(text)
            first_line += len(raw)


def count_lines(path, digest=None) -> int:
    """The number of lines :func:`read_lines` would give, reading ``path`` in blocks (and hashing them into
    ``digest``)."""
    path = Path(path)
    newlines = size = 0
    head = last = b""
    with open_binary(path) as handle:
        for block in iter(lambda: handle.read(1 << 24), b""):
            if digest is not None:
                digest.update(block)
            newlines += block.count(b"\n")
            head = head or block[:3]
            last = block[-1:]
            size += len(block)
    if size == 0 or (size == 3 and head == BYTE_ORDER_MARK.encode()):
        return 0
    return newlines + (last != b"\n")


def _line_count_error(src_path, src_count: int, tgt_path, tgt_count: int) -> TransformerMTError:
    return TransformerMTError(
        f"parallel files have different line counts: {src_path} has {src_count} lines, "
        f"{tgt_path} has {tgt_count}; line i of one must translate line i of the other"
    )


def read_parallel(src_path, tgt_path) -> tuple[list[str], list[str]]:
    """Both sides of a small parallel corpus (validation, test) as lists of lines."""
    src_lines, tgt_lines = read_lines(src_path, parallel=True), read_lines(tgt_path, parallel=True)
    if len(src_lines) != len(tgt_lines):
        raise _line_count_error(src_path, len(src_lines), tgt_path, len(tgt_lines))
    return src_lines, tgt_lines


def iter_parallel_chunks(src_path, tgt_path, chunk_lines: int = CHUNK_LINES
                         ) -> Iterator[tuple[list[str], list[str]]]:
    """Aligned chunks of both sides; the caller has checked that the line counts agree."""
    chunks = zip(iter_line_chunks(src_path, chunk_lines, parallel=True),
                 iter_line_chunks(tgt_path, chunk_lines, parallel=True), strict=True)
    try:
        yield from chunks
    except ValueError:  # zip(strict=True): one side ended first
        raise TransformerMTError(
            f"{src_path} or {tgt_path} changed while it was read (the line counts no longer agree); "
            f"do not change training files while transformer-mt prepares them"
        ) from None


# Copies without final punctuation

def without_final_punctuation(line: str) -> str:
    """``line`` without the punctuation (Unicode category P*) and spaces at its end."""
    end = len(line)
    while end and (unicodedata.category(line[end - 1]).startswith("P") or line[end - 1].isspace()):
        end -= 1
    return line[:end]


def copies_without_final_punctuation(src_lines, tgt_lines, share: float, rng: random.Random,
                                     positions: list[int] | None = None) -> tuple[list[str], list[str]]:
    """The copies :func:`add_unpunctuated_copies` appends for these pairs, drawing one number from ``rng``
    per pair, so consecutive chunks with one ``rng`` give what the whole corpus would. ``positions``, when
    given, receives the index (in these lines) of each pair copied."""
    extra_src, extra_tgt = [], []
    for i, (src, tgt) in enumerate(zip(src_lines, tgt_lines)):
        chosen = rng.random() < share
        stripped = without_final_punctuation(src)
        if chosen and stripped and stripped != src.rstrip():
            extra_src.append(stripped)
            extra_tgt.append(tgt)
            if positions is not None:
                positions.append(i)
    return extra_src, extra_tgt


def add_unpunctuated_copies(src_lines: list[str], tgt_lines: list[str], share: float,
                            seed: int) -> tuple[list[str], list[str], int]:
    """Append a ``share`` of the pairs whose source ends in punctuation, with that punctuation removed.

    The choice depends only on ``seed`` and the lines, so a run and its resume see the same data.
    """
    extra_src, extra_tgt = copies_without_final_punctuation(src_lines, tgt_lines, share, random.Random(seed))
    return src_lines + extra_src, tgt_lines + extra_tgt, len(extra_src)


# Encoded corpora

@dataclass
class EncodedCorpus:
    """Token ids of a parallel corpus: flat arrays and offsets (no bos/eos added).

    Sentence i of a side is ``ids[offsets[i]:offsets[i + 1]]``. A cached corpus holds read-only
    memory-mapped arrays.
    """

    src_ids: np.ndarray
    src_offsets: np.ndarray
    tgt_ids: np.ndarray
    tgt_offsets: np.ndarray
    text_index: TextIndex | None = None  # where each pair's text is (encode_parallel(text_index=True))

    def __len__(self) -> int:
        return len(self.src_offsets) - 1

    @property
    def src_lengths(self) -> np.ndarray:
        return np.diff(self.src_offsets)

    @property
    def tgt_lengths(self) -> np.ndarray:
        return np.diff(self.tgt_offsets)

    def src(self, i: int) -> np.ndarray:
        return self.src_ids[self.src_offsets[i]:self.src_offsets[i + 1]]

    def tgt(self, i: int) -> np.ndarray:
        return self.tgt_ids[self.tgt_offsets[i]:self.tgt_offsets[i + 1]]


@dataclass
class TextIndex:
    """Where the text of each pair of an encoded corpus is in its files, to encode it again (subword sampling).

    ``pair_lines[i]``: the line (from 0) of pair i, or ``-(line + 1)`` for a copy made without the source's
    final punctuation (data.unpunctuated_copies). ``{src,tgt}_line_starts``: the byte offset where each
    line of a file starts, then the file's size. All memory-mapped: a corpus's text is never held in memory.
    """

    pair_lines: np.ndarray
    src_line_starts: np.ndarray
    tgt_line_starts: np.ndarray


def line_starts(path: Path, block_size: int = 1 << 24) -> np.ndarray:
    """The byte offset of the start of each line of ``path`` (as read_lines splits it), then its size."""
    starts, size, last = [np.zeros(1, dtype=np.int64)], 0, b"\n"
    with open_binary(path) as handle:
        for block in iter(lambda: handle.read(block_size), b""):
            starts.append(np.flatnonzero(np.frombuffer(block, dtype=np.uint8) == 10).astype(np.int64) + size + 1)
            size += len(block)
            last = block[-1:]
    if last != b"\n":
        starts.append(np.array([size], dtype=np.int64))
    return np.concatenate(starts)


def resolve_workers(num_workers: int) -> int:
    """``data.num_workers``: 0 means the CPU cores this process may run on."""
    if num_workers > 0:
        return num_workers
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def encode_parallel(src_path, tgt_path, src_tok: Tokenizer, tgt_tok: Tokenizer, max_len: int,
                    cache_dir=None, drop_bad_pairs: bool = True, unpunctuated_copies: float = 0.0,
                    seed: int = 0, num_workers: int = 0, chunk_lines: int = CHUNK_LINES,
                    text_index: bool = False) -> EncodedCorpus:
    """Encode a parallel corpus, reusing a cache keyed by the files' contents and the tokenizers.

    With ``drop_bad_pairs`` (training), pairs with an empty side or a side longer
    than ``max_len`` tokens are dropped together and counted in the log. With
    ``unpunctuated_copies`` > 0 (training), see :func:`add_unpunctuated_copies`.
    ``num_workers``: tokenizer threads (0: all cores available).

    With ``cache_dir`` the corpus is memory-mapped from its cache entry there (built first if
    needed; safe when several processes call this at once); without, it is read into memory.
    ``text_index``: also record where each pair's text is (:class:`TextIndex`, for subword sampling).
    """
    src_path, tgt_path = Path(src_path), Path(tgt_path)
    digest = hashlib.sha1() if cache_dir is not None else None
    src_count, tgt_count = count_lines(src_path, digest), count_lines(tgt_path, digest)
    if src_count != tgt_count:
        raise _line_count_error(src_path, src_count, tgt_path, tgt_count)

    def build(folder: Path) -> None:
        _encode_into(folder, src_path, tgt_path, src_tok, tgt_tok, max_len, drop_bad_pairs, unpunctuated_copies,
                     seed, resolve_workers(num_workers), chunk_lines, text_index)

    if cache_dir is None:
        with tempfile.TemporaryDirectory(prefix="transformer-mt-corpus-") as folder:
            build(Path(folder))
            return _load(Path(folder), len(src_tok), len(tgt_tok), mapped=False, text_index=text_index)
    for path in (src_tok.model_path, tgt_tok.model_path):
        digest.update(read_bytes(path, "tokenizer model", MAX_MODEL_BYTES, "copy the whole run directory again"))
    digest.update(f"{max_len}{drop_bad_pairs}{unpunctuated_copies}{seed}".encode())
    digest.update(CACHE_FORMAT)
    if text_index:
        digest.update(b"with text index")
    name = f"{src_path.name}-{tgt_path.name}-{digest.hexdigest()[:16]}"
    return _cached(Path(cache_dir), name, build, len(src_tok), len(tgt_tok), text_index,
                   _cache_limits(src_path, tgt_path, src_count))


def _cache_limits(src_path: Path, tgt_path: Path, lines: int) -> dict:
    """Generous upper bounds on a cache entry's array lengths: at most two pairs a line (unpunctuated
    copies), and per side 16 pieces per byte or line of its file (NFKC turns 3 bytes into up to 18
    characters; each line adds begin/end tokens and a tag)."""
    pairs = 2 * lines
    return {"src_offsets": pairs + 1, "tgt_offsets": pairs + 1,
            "src_ids": 16 * (src_path.stat().st_size + lines) + 16,
            "tgt_ids": 16 * (tgt_path.stat().st_size + lines) + 16}


# Encoding

class _NpyWriter:
    """A 1-D .npy file written piece by piece.

    Its header is written first for length 0 and again in place at the end: numpy pads
    headers so that a longer length fits in the same bytes (for arrays that grow).
    """

    def __init__(self, path: Path, dtype):
        self.dtype = np.dtype(dtype)
        self.length = 0
        self.file = open_run_file(path, "wb")  # by descriptor, never through a link planted under the name
        self._write_header()
        self.header_size = self.file.tell()

    def _write_header(self) -> None:
        np.lib.format.write_array_header_1_0(self.file, {
            "descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False, "shape": (self.length,)})

    def append(self, values: np.ndarray) -> None:
        np.ascontiguousarray(values, dtype=self.dtype).tofile(self.file)
        self.length += len(values)

    def close(self) -> None:
        self.file.seek(0)
        self._write_header()
        if self.file.tell() != self.header_size:
            raise AssertionError(f"{self.file.name}: the .npy header changed size")
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()

    def discard(self) -> None:
        """Close the file of a write that failed (its folder is deleted)."""
        self.file.close()


class _SideWriter:
    """The ids and offsets of one side of a corpus."""

    def __init__(self, folder: Path, side: str):
        self.ids = _NpyWriter(folder / f"{side}_ids.npy", np.int32)
        self.offsets = _NpyWriter(folder / f"{side}_offsets.npy", np.int64)
        self.offsets.append(np.zeros(1, dtype=np.int64))

    def append(self, ids: np.ndarray, lengths: np.ndarray) -> None:
        self.offsets.append(self.ids.length + np.cumsum(lengths))
        self.ids.append(ids)

    def close(self) -> None:
        self.ids.close()
        self.offsets.close()

    def discard(self) -> None:
        self.ids.discard()
        self.offsets.discard()


@dataclass
class _PairCounts:
    pairs: int = 0  # read (and copies made)
    empty: int = 0  # dropped: a side without tokens
    too_long: int = 0  # dropped: a side longer than max_len


def _encode_into(folder: Path, src_path: Path, tgt_path: Path, src_tok: Tokenizer, tgt_tok: Tokenizer, max_len: int,
                 drop_bad_pairs: bool, copies_share: float, seed: int, num_threads: int, chunk_lines: int,
                 text_index: bool = False) -> None:
    """Write the encoded corpus as {src,tgt}_{ids,offsets}.npy into ``folder`` (and its TextIndex arrays)."""
    started = time.monotonic()
    src_writer = _SideWriter(folder, "src")
    tgt_writer = _SideWriter(folder, "tgt")
    lines_writer = _NpyWriter(folder / "pair_lines.npy", np.int64) if text_index else None
    counts = _PairCounts()

    def add(src_lines: list[str], tgt_lines: list[str], lines: np.ndarray | None = None) -> None:
        src_ids, src_lengths = src_tok.encode_flat(src_lines, num_threads)
        tgt_ids, tgt_lengths = tgt_tok.encode_flat(tgt_lines, num_threads)
        counts.pairs += len(src_lengths)
        if drop_bad_pairs:
            empty = (src_lengths == 0) | (tgt_lengths == 0)
            too_long = ~empty & ((src_lengths > max_len) | (tgt_lengths + 1 > max_len))
            counts.empty += int(np.count_nonzero(empty))
            counts.too_long += int(np.count_nonzero(too_long))
            keep = ~(empty | too_long)
            if not keep.all():
                src_ids, src_lengths = src_ids[np.repeat(keep, src_lengths)], src_lengths[keep]
                tgt_ids, tgt_lengths = tgt_ids[np.repeat(keep, tgt_lengths)], tgt_lengths[keep]
                lines = lines[keep] if lines is not None else None
        src_writer.append(src_ids, src_lengths)
        tgt_writer.append(tgt_ids, tgt_lengths)
        if lines_writer is not None:
            lines_writer.append(lines)

    try:
        first_line = 0
        for src_lines, tgt_lines in iter_parallel_chunks(src_path, tgt_path, chunk_lines):
            add(src_lines, tgt_lines, np.arange(first_line, first_line + len(src_lines), dtype=np.int64))
            first_line += len(src_lines)
        if copies_share:
            # A second pass: the copies follow all original pairs, as add_unpunctuated_copies appends them.
            rng, added, first_line = random.Random(seed), 0, 0
            for src_lines, tgt_lines in iter_parallel_chunks(src_path, tgt_path, chunk_lines):
                positions = []
                extra_src, extra_tgt = copies_without_final_punctuation(src_lines, tgt_lines, copies_share, rng,
                                                                        positions)
                added += len(extra_src)
                add(extra_src, extra_tgt, -(first_line + np.array(positions, dtype=np.int64) + 1))
                first_line += len(src_lines)
            log.info("%s: added %d pairs with the source's final punctuation removed "
                     "(data.unpunctuated_copies=%g)", src_path, added, copies_share)
        if counts.empty or counts.too_long:
            log.warning("%s/%s: skipped %d pairs with an empty side and %d pairs longer than data.max_len=%d "
                        "tokens (of %d pairs)", src_path, tgt_path.suffix, counts.empty, counts.too_long, max_len,
                        counts.pairs)
        kept = counts.pairs - counts.empty - counts.too_long
        if drop_bad_pairs and not kept:
            raise TransformerMTError(
                f"no usable sentence pairs in {src_path} / {tgt_path}: all {counts.pairs} are empty or longer "
                f"than data.max_len={max_len}"
            )
    except BaseException:
        src_writer.discard()
        tgt_writer.discard()
        if lines_writer is not None:
            lines_writer.discard()
        raise
    src_writer.close()
    tgt_writer.close()
    if lines_writer is not None:
        lines_writer.close()
        for side, path in (("src", src_path), ("tgt", tgt_path)):
            write_run_file(folder / f"{side}_line_starts.npy",
                           lambda handle, path=path: np.save(handle, line_starts(path)))
    log.info("encoded %d pairs of %s / %s (%d + %d tokens) in %.1f s", kept, src_path, tgt_path,
             src_writer.ids.length, tgt_writer.ids.length, time.monotonic() - started)


# Loading and checking

class DamagedCache(Exception):
    """A cache entry that cannot be what encode_parallel wrote; the message says why."""


# What reading a damaged .npy file raises (bad magic or header: ValueError; cut short: EOFError).
NPY_ERRORS = (OSError, EOFError, ValueError)


@dataclass
class _NpyArray:
    """Where the values of a .npy file are, from its header."""

    path: Path
    dtype: np.dtype
    shape: tuple
    data_offset: int

    @property
    def length(self) -> int:
        return int(np.prod(self.shape))


def _read_header(path: Path) -> _NpyArray:
    try:
        with open_regular_file(path) as handle:  # a FIFO in the cache must not hang the run
            version = np.lib.format.read_magic(handle)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = read(handle)
            array = _NpyArray(path, dtype, shape, handle.tell())
            size = os.fstat(handle.fileno()).st_size
    except NPY_ERRORS as exc:
        raise DamagedCache(f"{path.name}: {type(exc).__name__}: {exc}") from None
    if dtype.hasobject:
        raise DamagedCache(f"{path.name}: holds Python objects, which are never loaded (they would need pickle)")
    expected = array.data_offset + array.length * dtype.itemsize
    if size < expected:
        raise DamagedCache(f"{path.name}: truncated, {size} of {expected} bytes")
    return array


def _map(array: _NpyArray, random_access: bool) -> np.ndarray:
    """The values of a .npy file, mapped read-only; pages are read when used."""
    if array.length == 0:
        empty = np.zeros(array.shape, dtype=array.dtype)
        empty.flags.writeable = False
        return empty
    with open_regular_file(array.path) as handle:
        mapping = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    if random_access and hasattr(mmap, "MADV_RANDOM"):
        # Batches take sentences from all over the corpus: without this, every page fault would
        # also map (and count as used) the neighbouring pages that read-ahead brought in.
        mapping.madvise(mmap.MADV_RANDOM)
    values = np.frombuffer(mapping, dtype=array.dtype, count=array.length, offset=array.data_offset)
    return values if len(array.shape) == 1 else values.reshape(array.shape)


def _min_max(array: _NpyArray, block: int = 1 << 22) -> tuple[int, int]:
    """The smallest and largest value of a .npy file, read in blocks through the page cache (reading
    through the mapping would make every page of a large corpus part of this process's memory)."""
    low, high = None, None
    with open_regular_file(array.path) as handle:
        handle.seek(array.data_offset)
        for start in range(0, array.length, block):
            values = np.fromfile(handle, dtype=array.dtype, count=min(block, array.length - start))
            low = values.min() if low is None else min(low, values.min())
            high = values.max() if high is None else max(high, values.max())
    return int(low), int(high)


def _ids_problem(ids: _NpyArray, offsets: _NpyArray, offset_values: np.ndarray, vocab: int) -> str | None:
    if ids.dtype != np.int32 or offsets.dtype != np.int64 or len(ids.shape) != 1 or len(offsets.shape) != 1:
        return (f"ids/offsets are {ids.dtype}{list(ids.shape)}/{offsets.dtype}{list(offsets.shape)}, "
                f"expected 1-D int32/int64")
    # Offsets compared pairwise: np.diff could overflow on damaged values and hide a decrease.
    if (len(offset_values) == 0 or offset_values[0] != 0 or np.any(offset_values[1:] < offset_values[:-1])
            or offset_values[-1] != ids.length):
        return "offsets do not index the ids"
    if ids.length:
        low, high = _min_max(ids)
        if low < 0 or high >= vocab:
            return f"ids outside [0, {vocab})"
    return None


def _load_text_index(folder: Path, pairs: int, mapped: bool) -> TextIndex:
    headers = {name: _read_header(folder / f"{name}.npy") for name in TEXT_INDEX_ARRAYS}
    if any(header.dtype != np.int64 or len(header.shape) != 1 for header in headers.values()):
        raise DamagedCache("text index: not 1-D int64 arrays")
    arrays = {name: _map(header, random_access=True) for name, header in headers.items()}
    if not mapped:
        arrays = {name: np.array(values) for name, values in arrays.items()}
    index = TextIndex(**arrays)
    lines = len(index.src_line_starts) - 1
    if len(index.pair_lines) != pairs or lines != len(index.tgt_line_starts) - 1 or (
            pairs and not (-lines <= index.pair_lines.min() and index.pair_lines.max() < lines)):
        raise DamagedCache("text index: does not fit the corpus")
    return index


def _load(folder: Path, src_vocab: int, tgt_vocab: int, mapped: bool = True, text_index: bool = False,
          limits: dict | None = None) -> EncodedCorpus:
    """The corpus in ``folder``, checked (raises DamagedCache); memory-mapped or read into memory.
    ``limits``: the most entries each array can have for the corpus files it was made from."""
    headers = {name: _read_header(folder / f"{name}.npy") for name in CACHE_ARRAYS}
    for name, most in (limits or {}).items():
        # Checked before any value is read: a crafted (e.g. sparse, terabyte-long) file is refused at once.
        if headers[name].length > most:
            raise DamagedCache(f"{name}.npy: {headers[name].length} entries, more than its corpus files can give "
                               f"({most})")
    try:
        # Offsets are read whole for batching every epoch; ids a few sentences at a time.
        arrays = {name: _map(header, random_access=name.endswith("_ids")) for name, header in headers.items()}
        for side, vocab in (("src", src_vocab), ("tgt", tgt_vocab)):
            problem = _ids_problem(headers[f"{side}_ids"], headers[f"{side}_offsets"], arrays[f"{side}_offsets"],
                                   vocab)
            if problem is not None:
                raise DamagedCache(f"{side}: {problem}")
    except NPY_ERRORS as exc:
        raise DamagedCache(f"{type(exc).__name__}: {exc}") from None
    if len(arrays["src_offsets"]) != len(arrays["tgt_offsets"]):
        raise DamagedCache(f"{len(arrays['src_offsets']) - 1} source but {len(arrays['tgt_offsets']) - 1} "
                           f"target sentences")
    if not mapped:
        arrays = {name: np.array(values) for name, values in arrays.items()}
    index = _load_text_index(folder, len(arrays["src_offsets"]) - 1, mapped) if text_index else None
    return EncodedCorpus(**arrays, text_index=index)


def _open_entry(entry: Path, src_vocab: int, tgt_vocab: int, text_index: bool = False,
                limits: dict | None = None) -> tuple[EncodedCorpus | None, str | None]:
    """(the corpus, None) for a valid cache entry; (None, why) for a damaged one; (None, None) if there is none."""
    if not os.path.lexists(entry):
        return None, None
    try:
        return _load(entry, src_vocab, tgt_vocab, text_index=text_index, limits=limits), None
    except DamagedCache as exc:
        return None, str(exc)


# The cache directory

# Errors of writing a cache entry that the user can fix by freeing space or choosing another directory.
WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)


def _write_error(cache_dir: Path, exc: OSError, what: str | None = None) -> TransformerMTError:
    full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
    return TransformerMTError(
        f"the encoded corpus cannot be written to {cache_dir}: {f'{what} ({exc.strerror})' if what else exc.strerror}; "
        + ("free some space there or point 'data.cache_dir' at a writable directory with room for it" if full
           else "point 'data.cache_dir' at a directory of your own that you can write to (e.g. under your home)")
    )


@contextlib.contextmanager
def _exclusive_lock(lock_path: Path, purpose: str):
    """An flock held while the body runs: other processes wait (released by the kernel if this one dies)."""
    try:
        # never through a link planted under the lock's name (O_CREAT would create the file it points at)
        fd = _open_lock(lock_path)
    except OSError as exc:  # e.g. /proc or /sys, where no file can be created (ENOENT): the folder, not the run
        raise _write_error(lock_path.parent, exc, "its lock file cannot be created there") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for another process %s", purpose)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _open_lock(lock_path: Path) -> int:
    """A descriptor of the lock file ``lock_path`` (created if missing), by safe_files.open_run_file."""
    with open_run_file(lock_path, "ab") as handle:
        return os.dup(handle.fileno())


def _try_lock(lock_path: Path) -> int | None:
    """A file descriptor holding the flock of ``lock_path``, or None if another process holds it (or it
    cannot be opened)."""
    try:
        fd = _open_lock(lock_path)
    except (OSError, TransformerMTError):
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return fd
    except OSError:
        os.close(fd)
        return None


def _temporary_prefix(name: str) -> str:
    return f".{name}.tmp-"


def _lock_path(cache_dir: Path, name: str) -> Path:
    return cache_dir / f".{name}.lock"


def _remove_abandoned_builds(cache_dir: Path, locked_name: str) -> None:
    """Delete temporary directories of builds that died (their lock is free); ``locked_name``'s lock is ours."""
    for path in cache_dir.glob(".*.tmp-*"):
        name = path.name[1:].rpartition(".tmp-")[0]
        if name == locked_name:
            remove(path, ignore_errors=True)
            continue
        fd = _try_lock(_lock_path(cache_dir, name))
        if fd is not None:
            try:
                remove(path, ignore_errors=True)
            finally:
                os.close(fd)


def _check_not_shared(cache_dir: Path) -> None:
    """Refuse a cache folder every user may write to (/tmp, a shared folder): entry names are predictable, so
    another user could plant an entry there that training reads as its own ids, or hold its lock for good."""
    try:
        mode = os.stat(cache_dir).st_mode
    except OSError:
        return  # missing: made below, as the user's own
    if mode & stat.S_IWOTH:
        raise TransformerMTError(f"cache directory {cache_dir} ('data.cache_dir') may be written by every user: "
                                 f"another user could put encoded ids there that training would take as yours, "
                                 f"or hold its locks; point 'data.cache_dir' at a folder of your own (e.g. under "
                                 f"your home)")


def _cached(cache_dir: Path, name: str, build, src_vocab: int, tgt_vocab: int,
            text_index: bool = False, limits: dict | None = None) -> EncodedCorpus:
    """The cache entry ``cache_dir/name``, built by ``build(folder)`` under the entry's lock if it is missing."""
    _check_not_shared(cache_dir)
    entry = cache_dir / name
    corpus, _ = _open_entry(entry, src_vocab, tgt_vocab, text_index, limits)
    if corpus is not None:
        return corpus
    try:
        make_folders(cache_dir, "data.cache_dir")  # by descriptor: never through another user's link on the way
    except (OSError, TransformerMTError) as exc:
        if getattr(exc, "errno", None) is None:  # a link of another user on the way: its own message
            raise
        raise TransformerMTError(f"cache directory {cache_dir} cannot be created: {os.strerror(exc.errno)}; "
                                 f"point 'data.cache_dir' at a writable directory") from None
    with _exclusive_lock(_lock_path(cache_dir, name), f"to finish encoding {entry}"):
        # Another process may have built (or found damaged) the entry while this one waited.
        corpus, problem = _open_entry(entry, src_vocab, tgt_vocab, text_index, limits)
        if corpus is not None:
            return corpus
        if problem is not None:
            log.warning("cache %s is invalid (%s); rebuilding it", entry, problem)
            remove(entry, ignore_errors=True)
        _remove_abandoned_builds(cache_dir, name)
        try:
            folder = make_temporary_folder(entry, prefix=_temporary_prefix(name))
            try:
                build(folder)
                sync_folder(folder)
                # The rename is what makes an entry exist: before it, nothing looks finished.
                rename(folder, entry)
            except BaseException:
                remove(folder, ignore_errors=True)
                raise
            sync_folder(cache_dir)
        except OSError as exc:
            if exc.errno in WRITE_ERRNOS:
                raise _write_error(cache_dir, exc) from None
            raise
    corpus, problem = _open_entry(entry, src_vocab, tgt_vocab, text_index, limits)
    if corpus is None:
        raise TransformerMTError(f"cache {entry} was written but cannot be read back ({problem}); "
                                 f"check the disk, or point 'data.cache_dir' at another directory")
    return corpus
