"""Parallel corpora: read and check text files, encode once, batch by tokens.

Reading checks what commonly goes wrong with parallel text: files of
different line counts, invalid UTF-8 (reported with its line), and empty or
over-long pairs, which are dropped *as pairs* (never one side only, which
would shift the alignment) and counted.

Encoded corpora are cached in the run directory as flat numpy arrays plus
offsets, so tokenization happens once per corpus; a damaged cache file is
rebuilt, with a warning. Batches hold up to ``batch_tokens`` padded target
tokens; sentences are grouped by length so there is little padding, and the
batch order is shuffled per epoch from (seed, epoch), which makes the data
order reproducible for exact resume.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import random
import unicodedata
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .errors import TransformerMTError
from .tokenizer import BOS_ID, EOS_ID, PAD_ID, Tokenizer

log = logging.getLogger(__name__)


def read_bytes(path: Path) -> bytes:
    """The contents of a file, with clear errors."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise TransformerMTError(f"file {path} does not exist") from None
    except IsADirectoryError:
        raise TransformerMTError(f"{path} is a directory, expected a text file") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise TransformerMTError(f"file {path} is a symbolic link loop; point it at a real file") from None
        raise TransformerMTError(f"file {path} cannot be read: {exc.strerror}") from None


def read_lines(path) -> list[str]:
    """Read a UTF-8 text file as a list of lines (without newlines), with clear errors."""
    path = Path(path)
    data = read_bytes(path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise TransformerMTError(
            f"file {path} is not valid UTF-8: line {line} has an invalid byte sequence; "
            f"convert the file to UTF-8 (e.g. iconv -f LATIN1 -t UTF-8) or remove that line from both sides"
        ) from None
    return split_lines(text)


def split_lines(text: str) -> list[str]:
    """Text as lines, the way every input is split (files, standard input): at "\n" only.

    str.splitlines would also split at \x0b, \x1c, \x85, \u2028 ..., which may stand inside a
    sentence, shift parallel pairs out of alignment and give more output lines than input lines.
    A BOM, trailing "\r"s (CRLF files) and the empty piece after a final newline go.
    """
    if text.startswith("\ufeff"):
        text = text[1:]
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.rstrip("\r") for line in lines]


def read_parallel(src_path, tgt_path) -> tuple[list[str], list[str]]:
    src_lines, tgt_lines = read_lines(src_path), read_lines(tgt_path)
    if len(src_lines) != len(tgt_lines):
        raise TransformerMTError(
            f"parallel files have different line counts: {src_path} has {len(src_lines)} lines, "
            f"{tgt_path} has {len(tgt_lines)}; line i of one must translate line i of the other"
        )
    return src_lines, tgt_lines


@dataclass
class EncodedCorpus:
    """Token ids of a parallel corpus: flat arrays and offsets (no bos/eos added)."""

    src_ids: np.ndarray
    src_offsets: np.ndarray
    tgt_ids: np.ndarray
    tgt_offsets: np.ndarray

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


def _flatten(sequences: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
    offsets = np.zeros(len(sequences) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    flat = np.fromiter((t for s in sequences for t in s), dtype=np.int32, count=int(offsets[-1]))
    return flat, offsets


def without_final_punctuation(line: str) -> str:
    """``line`` without the punctuation (Unicode category P*) and spaces at its end."""
    end = len(line)
    while end and (unicodedata.category(line[end - 1]).startswith("P") or line[end - 1].isspace()):
        end -= 1
    return line[:end]


def add_unpunctuated_copies(src_lines: list[str], tgt_lines: list[str], share: float,
                            seed: int) -> tuple[list[str], list[str], int]:
    """Append a ``share`` of the pairs whose source ends in punctuation, with that punctuation removed.

    The choice depends only on ``seed`` and the lines, so a run and its resume see the same data.
    """
    rng = random.Random(seed)
    extra_src, extra_tgt = [], []
    for src, tgt in zip(src_lines, tgt_lines):
        chosen = rng.random() < share
        stripped = without_final_punctuation(src)
        if chosen and stripped and stripped != src.rstrip():
            extra_src.append(stripped)
            extra_tgt.append(tgt)
    return src_lines + extra_src, tgt_lines + extra_tgt, len(extra_src)


def encode_parallel(src_path, tgt_path, src_tok: Tokenizer, tgt_tok: Tokenizer, max_len: int,
                    cache_dir=None, drop_bad_pairs: bool = True, unpunctuated_copies: float = 0.0,
                    seed: int = 0) -> EncodedCorpus:
    """Encode a parallel corpus, reusing a cache keyed by the files' contents and the tokenizers.

    With ``drop_bad_pairs`` (training), pairs with an empty side or a side longer
    than ``max_len`` tokens are dropped together and counted in the log. With
    ``unpunctuated_copies`` > 0 (training), see :func:`add_unpunctuated_copies`.
    """
    src_path, tgt_path = Path(src_path), Path(tgt_path)
    cache_file = None
    if cache_dir is not None:
        key = hashlib.sha1()
        for path in (src_path, tgt_path, src_tok.model_path, tgt_tok.model_path):
            key.update(read_bytes(path))
        key.update(f"{max_len}{drop_bad_pairs}{unpunctuated_copies}{seed}".encode())
        cache_file = Path(cache_dir) / f"{src_path.name}-{tgt_path.name}-{key.hexdigest()[:16]}.npz"
        if cache_file.exists():
            corpus = read_cache(cache_file, len(src_tok), len(tgt_tok))
            if corpus is not None:
                return corpus
    src_lines, tgt_lines = read_parallel(src_path, tgt_path)
    if unpunctuated_copies:
        src_lines, tgt_lines, added = add_unpunctuated_copies(src_lines, tgt_lines, unpunctuated_copies, seed)
        log.info("%s: added %d pairs with the source's final punctuation removed (data.unpunctuated_copies=%g)",
                 src_path, added, unpunctuated_copies)
    src_seqs, tgt_seqs = src_tok.encode(src_lines), tgt_tok.encode(tgt_lines)
    if drop_bad_pairs:
        empty = too_long = 0
        keep_src, keep_tgt = [], []
        for s, t in zip(src_seqs, tgt_seqs):
            if not s or not t:
                empty += 1
            elif len(s) > max_len or len(t) + 1 > max_len:
                too_long += 1
            else:
                keep_src.append(s)
                keep_tgt.append(t)
        if empty or too_long:
            log.warning("%s/%s: skipped %d pairs with an empty side and %d pairs longer than data.max_len=%d tokens "
                        "(of %d pairs)", src_path, tgt_path.suffix, empty, too_long, max_len, len(src_seqs))
        if not keep_src:
            raise TransformerMTError(
                f"no usable sentence pairs in {src_path} / {tgt_path}: all {len(src_seqs)} are empty or longer "
                f"than data.max_len={max_len}"
            )
        src_seqs, tgt_seqs = keep_src, keep_tgt
    src_ids, src_offsets = _flatten(src_seqs)
    tgt_ids, tgt_offsets = _flatten(tgt_seqs)
    corpus = EncodedCorpus(src_ids, src_offsets, tgt_ids, tgt_offsets)
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(".tmp.npz")
        np.savez(tmp, **corpus.__dict__)
        tmp.replace(cache_file)
    return corpus


CACHE_ARRAYS = ("src_ids", "src_offsets", "tgt_ids", "tgt_offsets")
# What np.load and reading its arrays raise on a truncated or damaged file (object arrays: ValueError;
# damaged zip headers: NotImplementedError for "unsupported" methods, RuntimeError for "encrypted").
CACHE_ERRORS = (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile, zlib.error, NotImplementedError,
                RuntimeError)


def read_cache(cache_file: Path, src_vocab: int, tgt_vocab: int) -> EncodedCorpus | None:
    """The corpus cached in ``cache_file``; None, after a warning and with the file deleted, if it is damaged."""
    try:
        # allow_pickle=False: a cache file must never run code when it is loaded.
        with np.load(cache_file, allow_pickle=False) as arrays:
            corpus = EncodedCorpus(**{name: arrays[name] for name in CACHE_ARRAYS})
    except CACHE_ERRORS as exc:
        problem = f"{type(exc).__name__}: {exc}"
    else:
        problem = _corpus_problem(corpus, src_vocab, tgt_vocab)
        if problem is None:
            return corpus
    log.warning("cache file %s is invalid (%s); rebuilding it", cache_file, problem)
    cache_file.unlink(missing_ok=True)
    return None


def _corpus_problem(corpus: EncodedCorpus, src_vocab: int, tgt_vocab: int) -> str | None:
    """Why ``corpus`` cannot be what encode_parallel wrote (a damaged cache), or None."""
    for side, vocab in (("src", src_vocab), ("tgt", tgt_vocab)):
        problem = _ids_problem(getattr(corpus, f"{side}_ids"), getattr(corpus, f"{side}_offsets"), vocab)
        if problem is not None:
            return f"{side}: {problem}"
    if len(corpus.src_offsets) != len(corpus.tgt_offsets):
        return f"{len(corpus.src_offsets) - 1} source but {len(corpus.tgt_offsets) - 1} target sentences"
    return None


def _ids_problem(ids: np.ndarray, offsets: np.ndarray, vocab: int) -> str | None:
    if ids.dtype != np.int32 or offsets.dtype != np.int64 or ids.ndim != 1 or offsets.ndim != 1:
        return (f"ids/offsets are {ids.dtype}{list(ids.shape)}/{offsets.dtype}{list(offsets.shape)}, "
                f"expected 1-D int32/int64")
    # Offsets compared pairwise: np.diff could overflow on damaged values and hide a decrease.
    if len(offsets) == 0 or offsets[0] != 0 or np.any(offsets[1:] < offsets[:-1]) or offsets[-1] != len(ids):
        return "offsets do not index the ids"
    if len(ids) and (ids.min() < 0 or ids.max() >= vocab):
        return f"ids outside [0, {vocab})"
    return None


def count_oversized(corpus: EncodedCorpus, batch_tokens: int) -> int:
    """Training sentences longer than ``batch_tokens`` padded tokens: make_batches gives each a batch of
    its own, over the budget (and memory) that training.batch_tokens is meant to bound."""
    padded = np.maximum(corpus.src_lengths, corpus.tgt_lengths + 1)  # + eos (or bos), as in make_batches
    return int(np.count_nonzero(padded > batch_tokens))


@dataclass
class Batch:
    src_tokens: torch.Tensor  # (B, S)
    tgt_input: torch.Tensor  # (B, T): bos + target
    tgt_output: torch.Tensor  # (B, T): target + eos
    num_tokens: int  # real (non-pad) target tokens

    def to(self, device) -> "Batch":
        return Batch(self.src_tokens.to(device, non_blocking=True), self.tgt_input.to(device, non_blocking=True),
                     self.tgt_output.to(device, non_blocking=True), self.num_tokens)


def make_batches(corpus: EncodedCorpus, batch_tokens: int, seed: int, epoch: int, shuffle: bool = True,
                 length_multiple: int = 1) -> list[np.ndarray]:
    """Index lists of sentences, each batch within ``batch_tokens`` padded tokens.

    Sentences are sorted by (target length, source length) -- after a random
    permutation so equal lengths are mixed -- and cut into batches; the batch
    order is then shuffled. Everything depends only on (seed, epoch).
    """
    rng = np.random.default_rng([seed, epoch])
    n = len(corpus)
    order = rng.permutation(n) if shuffle else np.arange(n)
    src_len = corpus.src_lengths[order]
    tgt_len = corpus.tgt_lengths[order] + 1  # + eos (or bos)
    order = order[np.lexsort((src_len, tgt_len))]
    src_len, tgt_len = corpus.src_lengths[order], corpus.tgt_lengths[order] + 1
    batches = []
    start = 0
    max_len = 0
    for i in range(n):
        longest = max(max_len, int(tgt_len[i]), int(src_len[i]))
        if i > start and longest * (i - start + 1) > batch_tokens:
            batches.append(order[start:i])
            start, longest = i, max(int(tgt_len[i]), int(src_len[i]))
        max_len = longest
    if start < n:
        batches.append(order[start:])
    if shuffle:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


def pad_sequences(sequences: list[np.ndarray], prefix: int | None = None, suffix: int | None = None) -> torch.Tensor:
    extra = (prefix is not None) + (suffix is not None)
    longest = max(len(s) for s in sequences) + extra
    out = np.full((len(sequences), longest), PAD_ID, dtype=np.int64)
    for row, seq in enumerate(sequences):
        start = 0
        if prefix is not None:
            out[row, 0] = prefix
            start = 1
        out[row, start:start + len(seq)] = seq
        if suffix is not None:
            out[row, start + len(seq)] = suffix
    return torch.from_numpy(out)


def collate(corpus: EncodedCorpus, indices: np.ndarray) -> Batch:
    src = [corpus.src(i) for i in indices]
    tgt = [corpus.tgt(i) for i in indices]
    return Batch(
        src_tokens=pad_sequences(src),
        tgt_input=pad_sequences(tgt, prefix=BOS_ID),
        tgt_output=pad_sequences(tgt, suffix=EOS_ID),
        num_tokens=int(sum(len(t) for t in tgt) + len(tgt)),
    )
