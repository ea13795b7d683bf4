"""Training data made of several corpora, each with a share of every epoch and an optional source tag.

``data.train_corpora`` lists the corpora (e.g. the real parallel data and a back-translated one);
each is encoded into its own memory-mapped cache entry, as a single corpus is. An epoch holds as
many pairs as all corpora together; corpus i contributes ``weight_i / sum(weights)`` of them
(rounded so that the counts add up): a corpus smaller than its share is repeated whole as often
as it fits and topped up with a random subset, a larger one gives a random subset, fresh each
epoch. The draw depends only on (training.seed, epoch), so the epoch is the same after a resume
and on every rank. The pairs drawn are then batched by length like a single corpus's
(batches.make_batches), so a batch mixes corpora.

A corpus's ``tag`` (tagged back-translation, Caswell et al. 2019) is one token put before each
of its sources when its batches are collated: the cache holds untagged ids, and a tag of the
config never needs a corpus to be encoded again. In a multilingual run (corpora of several
directions, see config.CorpusConfig) every source starts with its target-language token
(``>>fr<<``, before the tag), put there the same way. ``data.sampling_temperature`` T > 0 gives
corpus i the share weight_i * size_i ** (1 / T) instead of weight_i. With ``data.subword_alpha`` each batch's
sentences are encoded again with a sampled segmentation (see sampling.py).

A single corpus without tags or sampling does not come here: training uses its EncodedCorpus
with batches.make_batches and batches.collate directly, exactly as before these options.

load_mix builds the mix of a config's corpora; MixedUpdates collates a training run's updates from it,
sampling the next update's segmentations in a background thread while the current one is computed.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .batches import Batch, make_batches
from .corpus import EncodedCorpus, encode_parallel
from .sampling import CorpusText, SubwordSampler, batch_seeds
from .tokenizer import BOS_ID, EOS_ID, PAD_ID, Tokenizer

log = logging.getLogger("transformer_mt")


@dataclass
class TrainingCorpus:
    """One corpus of a mix: its encoded pairs, files, share of each epoch and the ids put before each of its
    sources (its target-language token in a multilingual run, then its tag; none for most corpora)."""

    data: EncodedCorpus
    src_path: Path
    tgt_path: Path
    weight: float = 1.0
    prefix_ids: tuple[int, ...] = ()


@dataclass
class _Lengths:
    """What make_batches reads of a corpus: its sentences' lengths."""

    src_lengths: np.ndarray
    tgt_lengths: np.ndarray

    def __len__(self) -> int:
        return len(self.src_lengths)


def shares(sizes: list[int], weights: list[float], temperature: float = 0.0) -> np.ndarray:
    """How many pairs of each corpus an epoch of sum(sizes) pairs holds: proportional to ``weights`` (with a
    ``temperature`` T > 0: to weight * size ** (1 / T)), rounded by largest remainders so that they add up."""
    total = sum(sizes)
    weights = np.asarray(weights, dtype=np.float64)
    weights = weights / weights.max()  # weights of 1e308 would overflow their sum (every share 0)
    if temperature > 0:
        # In logarithms, relative to the largest corpus: size ** (1 / T) of a large corpus and a small T overflows
        # a float (and inf - inf is NaN); the largest corpus's term is 0, a smaller one's at most 0.
        logs = np.log(np.asarray(sizes, dtype=np.float64))
        with np.errstate(over="ignore", divide="ignore"):  # -inf: that corpus's share is 0
            logs = np.log(weights) + (logs - logs.max()) / temperature
        weights = np.exp(logs - logs.max())
    exact = weights / weights.sum() * total
    counts = np.floor(exact).astype(np.int64)
    order = np.argsort(-(exact - counts), kind="stable")
    counts[order[:total - int(counts.sum())]] += 1
    return counts


def _pad(rows: list[np.ndarray], bos: bool = False, eos: bool = False) -> torch.Tensor:
    out = np.full((len(rows), max(len(r) for r in rows) + int(bos) + int(eos)), PAD_ID, dtype=np.int64)
    first = int(bos)
    for i, row in enumerate(rows):
        out[i, first:first + len(row)] = row
        if eos:
            out[i, first + len(row)] = EOS_ID
    if bos:
        out[:, 0] = BOS_ID
    return torch.from_numpy(out)


class CorpusMix:
    """Several training corpora batched together in fixed shares; see the module docstring."""

    def __init__(self, corpora: list[TrainingCorpus], src_tok: Tokenizer, tgt_tok: Tokenizer,
                 sampler: SubwordSampler | None = None, temperature: float = 0.0):
        self.corpora = corpora
        self.src_tok, self.tgt_tok, self.sampler = src_tok, tgt_tok, sampler
        self.sizes = [len(c.data) for c in corpora]
        self.starts = np.concatenate([[0], np.cumsum(self.sizes)]).astype(np.int64)
        self.counts = shares(self.sizes, [c.weight for c in corpora], temperature)
        # Lengths of all pairs one corpus after the other (what batching needs), the prefix ids counted.
        self.src_lengths = np.concatenate([c.data.src_lengths + len(c.prefix_ids) for c in corpora])
        self.tgt_lengths = np.concatenate([c.data.tgt_lengths for c in corpora])
        self.texts = ([CorpusText(c.data, c.src_path, c.tgt_path) for c in corpora] if sampler is not None
                      else None)

    def __len__(self) -> int:
        return int(self.starts[-1])

    def epoch_pairs(self, seed: int, epoch: int) -> np.ndarray:
        """The pairs of an epoch (indices into all corpora one after the other; a pair may come several times)."""
        rng = np.random.default_rng([seed, epoch, 27])  # a stream of its own: make_batches uses [seed, epoch]
        drawn = []
        for start, size, count in zip(self.starts, self.sizes, self.counts):
            whole, rest = divmod(int(count), size)
            drawn.append(np.tile(np.arange(size, dtype=np.int64), whole) + start)
            drawn.append(np.sort(rng.choice(size, rest, replace=False)).astype(np.int64) + start)
        return np.concatenate(drawn)

    def make_batches(self, batch_tokens: int, seed: int, epoch: int) -> list[np.ndarray]:
        """The epoch's batches, each an array of indices into all corpora (see batches.make_batches)."""
        pairs = self.epoch_pairs(seed, epoch)
        lengths = _Lengths(self.src_lengths[pairs], self.tgt_lengths[pairs])
        return [pairs[batch] for batch in make_batches(lengths, batch_tokens, seed, epoch)]

    def corpus_of(self, indices: np.ndarray) -> np.ndarray:
        """Which corpus each of ``indices`` belongs to."""
        return np.searchsorted(self.starts, indices, side="right") - 1

    def collate(self, indices: np.ndarray, source_eos: bool = False, seeds: tuple[int, int] | None = None) -> Batch:
        """The pairs ``indices`` as a batch: target-language tokens and tags before their sources, and with subword
        sampling the segmentations drawn with ``seeds`` (batch_seeds)."""
        indices = np.asarray(indices, dtype=np.int64)
        which = self.corpus_of(indices)
        sources: list[np.ndarray] = [None] * len(indices)
        targets: list[np.ndarray] = [None] * len(indices)
        for c in np.unique(which):
            rows = np.flatnonzero(which == c)
            corpus = self.corpora[c]
            local = indices[rows] - self.starts[c]
            src = [corpus.data.src(i) for i in local]
            tgt = [corpus.data.tgt(i) for i in local]
            prefix = corpus.prefix_ids
            if self.sampler is not None:
                src_text, tgt_text = self.texts[c].pairs(local)
                # One seed per batch and side; a corpus's rows get their own stream through its number.
                src = self.sampler.encode(self.src_tok, src_text, src, (seeds[0] + int(c)) % 2**32, extra=len(prefix))
                tgt = self.sampler.encode(self.tgt_tok, tgt_text, tgt, (seeds[1] + int(c)) % 2**32, extra=1)
            for row, s, t in zip(rows, src, tgt):
                sources[row] = np.concatenate([prefix, s]).astype(np.int64) if prefix else s
                targets[row] = t
        return Batch(src_tokens=_pad(sources, eos=source_eos), tgt_input=_pad(targets, bos=True),
                     tgt_output=_pad(targets, eos=True), num_tokens=sum(len(t) + 1 for t in targets))


def load_mix(files: list, src_tok: Tokenizer, tgt_tok: Tokenizer, data, seed: int, cache_dir) -> CorpusMix:
    """The training corpora ``files`` (config.TrainingFiles: data.training_files() of the config's ``data`` section,
    data.train_corpora or the one corpus, for subword sampling), each encoded into its own cache entry, as one mix."""
    sampling = bool(data.subword_alpha)
    corpora = []
    for corpus_files in files:
        encoded = encode_parallel(corpus_files.src, corpus_files.tgt, src_tok, tgt_tok, data.max_len,
                                  cache_dir=cache_dir, unpunctuated_copies=data.unpunctuated_copies, seed=seed,
                                  num_workers=data.num_workers, text_index=sampling)
        before = [token for token in (corpus_files.language_token, corpus_files.tag) if token]
        corpora.append(TrainingCorpus(encoded, corpus_files.src, corpus_files.tgt, corpus_files.weight,
                                      tuple(src_tok.piece_to_id(before)) if before else ()))
    sampler = SubwordSampler(data.subword_alpha, data.subword_nbest, data.max_len) if sampling else None
    mix = CorpusMix(corpora, src_tok, tgt_tok, sampler, data.sampling_temperature)
    if len(corpora) > 1 or data.tags():
        for corpus, count, corpus_files in zip(corpora, mix.counts, files):
            notes = ([f", sources start with {corpus_files.language_token}"] if corpus_files.language_token else []) \
                + ([f", sources tagged {corpus_files.tag}"] if corpus_files.tag else [])
            log.info("training corpus %s: %d pairs, weight %g: %d pairs per epoch%s", corpus.src_path.with_suffix(""),
                     len(corpus.data), corpus_files.weight, count, "".join(notes))
    if sampling:
        log.info("subword regularization: each training batch encoded again with SentencePiece sampling "
                 "(alpha %g, nbest %d)", data.subword_alpha, data.subword_nbest)
    return mix


class MixedUpdates:
    """A training run's updates (``accumulate`` batches each) collated from a CorpusMix, for one rank.

    Subword samples are seeded by each batch's place (batch_seeds), so an update is the same whichever thread
    collates it, and when: with subword sampling the next update is sampled in a background thread while the
    current one is computed (SentencePiece releases the GIL), which hides its cost.
    """

    def __init__(self, mix: CorpusMix, accumulate: int, seed: int, rank: int, source_eos: bool):
        self.mix, self.accumulate, self.seed, self.rank, self.source_eos = mix, accumulate, seed, rank, source_eos
        self.sampling_thread: ThreadPoolExecutor | None = None
        self.prefetched = None  # ((epoch, first batch), future of its collated batches)

    def collate(self, batches, first: int, epoch: int) -> list:
        """The update of batches[first:first + accumulate] of this rank's epoch."""
        collated = []
        for number in range(first, min(first + self.accumulate, len(batches))):
            seeds = batch_seeds(self.seed, epoch, self.rank, number) if self.mix.sampler is not None else None
            collated.append(self.mix.collate(batches[number], self.source_eos, seeds))
        return collated

    def group(self, batches, first: int, epoch: int) -> list:
        """collate's update, taken from the background thread when it sampled it already; the next update's
        sampling starts there meanwhile."""
        key = (epoch, first)
        prefetched, self.prefetched = self.prefetched, None
        group = prefetched[1].result() if prefetched is not None and prefetched[0] == key else \
            self.collate(batches, first, epoch)
        following = first + self.accumulate
        if self.mix.sampler is not None and following < len(batches):
            if self.sampling_thread is None:
                self.sampling_thread = ThreadPoolExecutor(1, thread_name_prefix="transformer-mt-subword-sampling")
            self.prefetched = ((epoch, following), self.sampling_thread.submit(self.collate, batches, following, epoch))
        return group

    def close(self) -> None:
        if self.sampling_thread is not None:
            self.sampling_thread.shutdown(wait=True, cancel_futures=True)
            self.sampling_thread = None


__all__ = ["CorpusMix", "MixedUpdates", "TrainingCorpus", "batch_seeds", "load_mix", "shares"]
