"""Subword regularization: training sentences encoded again, with a sampled segmentation, batch by batch.

``data.subword_alpha`` > 0 turns it on (training only; validation, ``translate`` and every other
encoding stay deterministic). SentencePiece samples the segmentation: BPE-dropout (Provilkov et
al. 2020) for bpe models, where ``alpha`` is the probability of dropping a merge; subword
regularization (Kudo 2018) for unigram models, where ``alpha`` smooths the distribution over
the ``nbest_size`` best segmentations (-1: all).

Design: the memory-mapped cache holds the deterministic ids, which batching uses for lengths;
a cache entry built with a :class:`~.corpus.TextIndex` also knows where each pair's text is in
its files. When a batch is collated, its sentences' lines are read through a memory map of the
text files (never the whole corpus in memory) and encoded again with sampling. SentencePiece's
sampling is deterministic for a seed set just before a single-threaded call, and the seed is
derived from (training.seed, epoch, rank, batch number), so a resumed run draws exactly what
the uninterrupted one drew. Batches are cut by the deterministic lengths: a sampled
segmentation is longer (BPE-dropout 0.1: ~+25% pieces), so a batch holds that many more
tokens than ``training.batch_tokens``. A sampled side longer than ``data.max_len`` falls back to
its deterministic ids.

The trainer collates the next update's batches in a background thread while the current one
computes (mixing.MixedUpdates), so the few milliseconds of sampling per batch (docs/guides/small-corpora.md)
are hidden unless they exceed an update. The alternative, re-encoding the whole corpus
into a new cache entry each epoch in a background process, costs no time per step either but a
full encoding pass and a copy of the ids per epoch, and a process to manage across resume and
ranks.
"""

from __future__ import annotations

import mmap
from pathlib import Path

import numpy as np
import sentencepiece as spm

from ..errors import TransformerMTError
from .corpus import BYTE_ORDER_MARK, EncodedCorpus, open_binary, without_final_punctuation
from .tokenizer import Tokenizer


class CorpusText:
    """The text of an encoded corpus's pairs, read from its files through memory maps."""

    def __init__(self, corpus: EncodedCorpus, src_path: Path, tgt_path: Path):
        if corpus.text_index is None:
            raise ValueError("the corpus was encoded without text_index=True")
        self.index = corpus.text_index
        self.files = [self._map(path, starts) for path, starts in
                      ((src_path, self.index.src_line_starts), (tgt_path, self.index.tgt_line_starts))]

    @staticmethod
    def _map(path: Path, starts: np.ndarray):
        with open_binary(path) as handle:
            size = handle.seek(0, 2)
            if size != int(starts[-1]):
                raise TransformerMTError(f"{path} changed since it was encoded ({size} bytes, {int(starts[-1])} "
                                         f"then); do not change training files during training")
            return (mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) if size else b""), starts

    @staticmethod
    def _line(file, line: int) -> str:
        data, starts = file
        raw = data[int(starts[line]):int(starts[line + 1])]
        text = raw.decode("utf-8").removesuffix("\n").rstrip("\r")  # as read_lines splits
        return text.removeprefix(BYTE_ORDER_MARK) if line == 0 else text

    def pairs(self, indices: np.ndarray) -> tuple[list[str], list[str]]:
        """The (source, target) texts of pairs ``indices``, as they were encoded."""
        sources, targets = [], []
        for pair_line in self.index.pair_lines[indices]:
            line = int(pair_line) if pair_line >= 0 else -int(pair_line) - 1
            source = self._line(self.files[0], line)
            sources.append(source if pair_line >= 0 else without_final_punctuation(source))
            targets.append(self._line(self.files[1], line))
        return sources, targets


class SubwordSampler:
    """Sampled segmentations of sentences, reproducible from a seed."""

    def __init__(self, alpha: float, nbest: int, max_len: int):
        self.alpha, self.nbest, self.max_len = alpha, nbest, max_len

    def encode(self, tokenizer: Tokenizer, texts: list[str], fallback: list[np.ndarray], seed: int,
               extra: int = 0) -> list[np.ndarray]:
        """``texts`` encoded with a sampled segmentation (ids, no bos/eos); a text whose sample is longer than
        max_len - ``extra`` keeps its ``fallback`` (deterministic) ids."""
        # Deterministic only single-threaded with the seed set just before the call (SentencePiece's
        # generator is per thread; several threads share the sentences out in no fixed order).
        spm.set_random_generator_seed(seed)
        sampled = tokenizer.sp.encode(texts, enable_sampling=True, alpha=self.alpha, nbest_size=self.nbest,
                                      num_threads=1)
        limit = self.max_len - extra
        return [np.asarray(ids, dtype=np.int64) if len(ids) <= limit else np.asarray(old, dtype=np.int64)
                for ids, old in zip(sampled, fallback)]


def batch_seeds(seed: int, epoch: int, rank: int, batch: int) -> tuple[int, int]:
    """SentencePiece seeds for the source and target side of one batch of one rank."""
    first, second = np.random.SeedSequence([seed, epoch, rank, batch, 27]).generate_state(2)
    return int(first), int(second)
