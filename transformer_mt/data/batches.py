"""Training batches from encoded parallel corpora.

Batches hold up to ``batch_tokens`` padded tokens; sentences are grouped by
length so there is little padding, and the batch order is shuffled per epoch
from (seed, epoch), which makes the data order reproducible for exact resume.
Batching works on the corpus's length arrays only, and a batch reads just its
own sentences' ids, so a memory-mapped corpus of millions of pairs is paged in
as training uses it.

Reading, checking, encoding and caching corpora live in :mod:`.corpus`; the
names imported from there are part of this module's interface too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .corpus import (
    EncodedCorpus,
    add_unpunctuated_copies,
    encode_parallel,
    iter_line_chunks,
    read_bytes,
    read_lines,
    read_parallel,
    split_lines,
    without_final_punctuation,
)
from .tokenizer import BOS_ID, EOS_ID, PAD_ID

__all__ = [
    # corpora (from .corpus)
    "EncodedCorpus", "add_unpunctuated_copies", "encode_parallel", "iter_line_chunks", "read_bytes", "read_lines",
    "read_parallel", "split_lines", "without_final_punctuation",
    # batches
    "Batch", "collate", "count_oversized", "make_batches",
]


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

    def to(self, device) -> Batch:
        return Batch(self.src_tokens.to(device, non_blocking=True), self.tgt_input.to(device, non_blocking=True),
                     self.tgt_output.to(device, non_blocking=True), self.num_tokens)


def _compact(lengths: np.ndarray) -> np.ndarray:
    """``lengths`` as uint16 where they fit (always, but for absurd sentences): a quarter of the memory of
    int64 for corpora of millions of pairs, and numpy sorts them by radix sort, several times faster."""
    if len(lengths) and lengths.max() < 1 << 16:
        return lengths.astype(np.uint16)
    return lengths


def _batch_ends(widths: np.ndarray, sorted_tgt: np.ndarray, batch_tokens: int) -> list[int]:
    """Where make_batches cuts the sorted sentences: the end (exclusive) of each batch.

    A batch grows while (its widest sentence) x (its number of sentences) stays within
    ``batch_tokens``; it ends before the first sentence that would break that, and holds at least
    one sentence. That product only grows as a batch grows, so each batch is found with one
    vectorised search: a loop over batches, not over sentences.
    """
    n = len(widths)
    counts = np.arange(1, min(n, batch_tokens + 1) + 1, dtype=np.int64)
    ends = []
    start = 0
    while start < n:
        # Targets are sorted, so no width from `start` on is below sorted_tgt[start]: more than
        # batch_tokens // sorted_tgt[start] sentences never fit, and the search looks no further.
        stop = min(n, start + batch_tokens // int(sorted_tgt[start]) + 1)
        cost = np.maximum.accumulate(widths[start:stop]) * counts[:stop - start]
        over = cost[1:] > batch_tokens
        start = start + 1 + int(over.argmax()) if over.any() else stop
        ends.append(start)
    return ends


def make_batches(corpus: EncodedCorpus, batch_tokens: int, seed: int, epoch: int, shuffle: bool = True,
                 length_multiple: int = 1) -> list[np.ndarray]:
    """Index lists of sentences, each batch within ``batch_tokens`` padded tokens.

    Sentences are sorted by (target length, source length) -- after a random
    permutation so equal lengths are mixed -- and cut into batches; the batch
    order is then shuffled. Everything depends only on (seed, epoch).
    """
    rng = np.random.default_rng([seed, epoch])
    n = len(corpus)
    if n == 0:
        return []
    src_lengths = _compact(corpus.src_lengths)
    tgt_lengths = _compact(corpus.tgt_lengths + 1)  # + eos (or bos)
    order = rng.permutation(n) if shuffle else np.arange(n)
    order = order[np.lexsort((src_lengths[order], tgt_lengths[order]))]
    sorted_tgt = tgt_lengths[order]
    widths = np.maximum(src_lengths[order], sorted_tgt)
    ends = _batch_ends(widths, sorted_tgt, batch_tokens)
    batches = [order[start:end] for start, end in zip([0] + ends[:-1], ends)]
    if shuffle:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


def _padded(ids: np.ndarray, offsets: np.ndarray, indices: np.ndarray, bos: bool = False,
            eos: bool = False, prefix: tuple[int, ...] = ()) -> torch.Tensor:
    """The sentences ``indices`` as rows padded with PAD_ID, optionally after BOS_ID or the ids ``prefix`` /
    followed by EOS_ID.

    Reads only those sentences' ids (one gather): of a memory-mapped corpus, only the pages holding them.
    """
    starts = offsets[indices]
    lengths = offsets[indices + 1] - starts
    rows = len(indices)
    first = int(bos) + len(prefix)  # the column of each sentence's first token
    out = np.full((rows, int(lengths.max()) + first + int(eos)), PAD_ID, dtype=np.int64)
    row_of_token = np.repeat(np.arange(rows), lengths)
    position = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    out[row_of_token, first + position] = ids[np.repeat(starts, lengths) + position]
    if bos:
        out[:, 0] = BOS_ID
    if prefix:
        out[:, int(bos):first] = prefix
    if eos:
        out[np.arange(rows), first + lengths] = EOS_ID
    return torch.from_numpy(out)


def collate(corpus: EncodedCorpus, indices: np.ndarray, source_eos: bool = False,
            source_prefix: tuple[int, ...] = ()) -> Batch:
    """The sentences ``indices`` as a batch; ``source_eos``: sources end in eos (model.source_eos);
    ``source_prefix``: ids every source starts with (a multilingual run's target-language token)."""
    indices = np.asarray(indices, dtype=np.int64)
    tgt_lengths = corpus.tgt_offsets[indices + 1] - corpus.tgt_offsets[indices]
    return Batch(
        src_tokens=_padded(corpus.src_ids, corpus.src_offsets, indices, eos=source_eos, prefix=tuple(source_prefix)),
        tgt_input=_padded(corpus.tgt_ids, corpus.tgt_offsets, indices, bos=True),
        tgt_output=_padded(corpus.tgt_ids, corpus.tgt_offsets, indices, eos=True),
        num_tokens=int(tgt_lengths.sum()) + len(indices),
    )
