"""A translation lexicon from encoded parallel corpora: for each source piece, the target pieces that occur
with it most consistently (what decoding/shortlist.py restricts the output layer to).

The statistic is the Dice coefficient of sentence-level co-occurrence,
``dice(s, t) = 2 c(s, t) / (c(s) + c(t))``, where c counts sentence pairs (a piece twice in a sentence counts
once). Why this one:

- Word alignments (IBM models with fast_align or eflomal, as Marian's lexical shortlists use) give sharper
  lexica, but need an aligner (a compiled dependency, or iterations of EM over the corpus written here); the
  counts need one pass over the ids that training has already encoded (and cached), a few seconds for
  Multi30k.
- Pointwise mutual information, log c(s, t) N / (c(s) c(t)), ranks rare pairs first: two pieces seen once, in
  the same sentence, get the largest PMI there is, so a top-k by PMI fills up with the noise of singletons.
  Dice is 1 only for pieces that always occur together and falls when either occurs much more often than
  the pair: a piece such as "the" co-occurs with everything and scores low with each (it comes in through
  the most frequent target pieces, which a shortlist always holds).

Sentence pairs beyond ``max_pairs`` are left out evenly (every n-th pair kept): the lexicon's top candidates
are settled long before millions of pairs, and the counting costs time and memory in proportion to them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from .corpus import EncodedCorpus

# Sentence pairs counted at once: each brings ~ (unique source pieces) x (unique target pieces) int64 keys.
CHUNK_PAIRS = 20_000
# Distinct (source, target) pairs held before their counts are merged (bounds memory: 16 bytes each).
MERGE_KEYS = 20_000_000


@dataclass
class Lexicon:
    """``candidates[s]``: the target ids that co-occur best with source id s, best first, -1 where there are
    fewer (``scores[s]``: their Dice coefficients); ``target_by_frequency``: every target id, those in the
    most sentences first; ``pairs``: the sentence pairs counted."""

    candidates: np.ndarray  # (source vocabulary, top_k) int32
    scores: np.ndarray  # (source vocabulary, top_k) float32
    target_by_frequency: np.ndarray  # (target vocabulary,) int32
    pairs: int


def gather_pairs(ids: np.ndarray, offsets: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The ids of sentences ``rows`` of one side (flat ``ids``, ``offsets``), one after another, and their
    offsets (from 0)."""
    starts = offsets[rows].astype(np.int64)
    lengths = offsets[rows + 1].astype(np.int64) - starts
    new_offsets = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(lengths, out=new_offsets[1:])
    index = np.arange(new_offsets[-1], dtype=np.int64) + np.repeat(starts - new_offsets[:-1], lengths)
    return np.asarray(ids[index], dtype=np.int64), new_offsets


def distinct_per_sentence(ids: np.ndarray, offsets: np.ndarray, vocab: int) -> tuple[np.ndarray, np.ndarray]:
    """(sentence, id) of each distinct id of each sentence, sorted by sentence."""
    sentence = np.repeat(np.arange(len(offsets) - 1, dtype=np.int64), np.diff(offsets))
    keys = np.unique(sentence * vocab + ids)
    return keys // vocab, keys % vocab


def pair_keys(src: tuple[np.ndarray, np.ndarray], tgt: tuple[np.ndarray, np.ndarray], sentences: int,
              tgt_vocab: int) -> np.ndarray:
    """``s * tgt_vocab + t`` for every distinct source id s and target id t of the same sentence pair
    (``src``/``tgt``: distinct_per_sentence of each side)."""
    src_sentence, src_id = src
    tgt_sentence, tgt_id = tgt
    per_sentence = np.bincount(tgt_sentence, minlength=sentences)
    first = np.zeros(sentences, dtype=np.int64)
    np.cumsum(per_sentence[:-1], out=first[1:])
    repeats = per_sentence[src_sentence]  # each source id meets every target id of its sentence
    total = int(repeats.sum())
    block_start = np.repeat(np.cumsum(repeats) - repeats, repeats)
    target_index = np.repeat(first[src_sentence], repeats) + (np.arange(total, dtype=np.int64) - block_start)
    return np.repeat(src_id, repeats) * tgt_vocab + tgt_id[target_index]


def _merge(keys: list[np.ndarray], counts: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    merged, inverse = np.unique(np.concatenate(keys), return_inverse=True)
    return merged, np.bincount(inverse, weights=np.concatenate(counts), minlength=len(merged)).astype(np.int64)


def cooccurrence_lexicon(corpora: Iterable[EncodedCorpus], src_vocab: int, tgt_vocab: int, top_k: int,
                         max_pairs: int = 0) -> Lexicon:
    """The lexicon of ``corpora`` (their pairs counted together): up to ``top_k`` target ids per source id by
    Dice; ``max_pairs`` > 0: at most that many pairs, taken evenly from all of them."""
    corpora = list(corpora)
    total = sum(len(corpus) for corpus in corpora)
    stride = max(1, -(-total // max_pairs)) if max_pairs else 1
    src_counts = np.zeros(src_vocab, dtype=np.int64)
    tgt_counts = np.zeros(tgt_vocab, dtype=np.int64)
    keys: list[np.ndarray] = []
    counts: list[np.ndarray] = []
    held = pairs = 0
    position = 0  # over all corpora, so that every stride-th pair is kept across their borders
    for corpus in corpora:
        kept = np.arange((-position) % stride, len(corpus), stride, dtype=np.int64)
        position += len(corpus)
        for start in range(0, len(kept), CHUNK_PAIRS):
            rows = kept[start:start + CHUNK_PAIRS]
            src = distinct_per_sentence(*gather_pairs(corpus.src_ids, corpus.src_offsets, rows), src_vocab)
            tgt = distinct_per_sentence(*gather_pairs(corpus.tgt_ids, corpus.tgt_offsets, rows), tgt_vocab)
            src_counts += np.bincount(src[1], minlength=src_vocab)
            tgt_counts += np.bincount(tgt[1], minlength=tgt_vocab)
            chunk_keys, chunk_counts = np.unique(pair_keys(src, tgt, len(rows), tgt_vocab), return_counts=True)
            keys.append(chunk_keys)
            counts.append(chunk_counts)
            held += len(chunk_keys)
            pairs += len(rows)
            if held > MERGE_KEYS and len(keys) > 1:
                merged = _merge(keys, counts)
                keys, counts, held = [merged[0]], [merged[1]], len(merged[0])
    candidates = np.full((src_vocab, top_k), -1, dtype=np.int32)
    scores = np.zeros((src_vocab, top_k), dtype=np.float32)
    if keys:
        pair, together = _merge(keys, counts)
        source, target = pair // tgt_vocab, pair % tgt_vocab
        dice = 2.0 * together / (src_counts[source] + tgt_counts[target])
        # By source, then best Dice first, then (a tie) the target seen in more sentences, then the lower id.
        order = np.lexsort((target, -tgt_counts[target], -dice, source))
        source, target, dice = source[order], target[order], dice[order]
        group_start = np.searchsorted(source, source, side="left")
        rank = np.arange(len(source)) - group_start
        keep = rank < top_k
        candidates[source[keep], rank[keep]] = target[keep]
        scores[source[keep], rank[keep]] = dice[keep]
    # Most sentences first; ties by id, so that the order is the same on every machine.
    target_by_frequency = np.lexsort((np.arange(tgt_vocab), -tgt_counts)).astype(np.int32)
    return Lexicon(candidates, scores, target_by_frequency, pairs)
