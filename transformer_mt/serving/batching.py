"""Dynamic batching: sentences of requests that arrive together are decoded together.

A server gets many small requests at once. Decoding each alone wastes the
batched beam search (one sentence uses a fraction of what a batch of 64 costs),
so requests wait in a queue and one worker thread decodes them in batches:

- a batch closes when it holds ``max_batch_sentences`` sentences, or when
  ``max_wait_ms`` pass without a new request (counted from when the decoder
  became free or from the newest request, whichever is later), and at the
  latest ``10 * max_wait_ms`` after the decoder became free. Counting from the
  newest request, not the first, matters under load: the clients of the batch
  just answered send their next requests a few milliseconds later, and a batch
  closed at once would hold only the requests that queued meanwhile, so the
  clients would split into two half-size batches that take turns; a lone
  request still waits only ``max_wait_ms``;
- requests with different decoding options (beam size, length penalty,
  n-best, alignment, sampling, repetition control) go into different batches;
  target prefixes and glossary terms are per sentence, so requests with and without them share batches;
- the queue holds at most ``max_queue_sentences`` sentences; beyond that
  ``submit`` raises :class:`QueueFull` at once (the server answers 503), so a
  burst cannot grow memory or waiting times without bound.

Decoding runs in the worker thread, so an asyncio server stays responsive
while a batch decodes (PyTorch releases the GIL inside its kernels).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field

from ..decoding.translator import Translator

# A batch waits for more requests at most this many times max_wait_ms (see the module's docstring).
MAX_WAIT_FACTOR = 10


class QueueFull(Exception):
    """The queue already holds max_queue_sentences sentences; try again later."""


class ShuttingDown(Exception):
    """The batcher no longer accepts requests (the server is stopping)."""


def _can_join(job, first) -> bool:
    """Whether ``job`` may be decoded in ``first``'s batch: the same options, and no seed. A seeded
    sampling request is decoded alone, so that its samples are those of translate() on its own texts
    (the seed's random stream is drawn for every row of a batch), whoever else is asking."""
    return job is first or (job.options == first.options and first.options.seed is None)


@dataclass(frozen=True)
class DecodeOptions:
    beam_size: int
    length_penalty: float
    nbest: int
    alignment: str | None = None  # "pieces" or "words": results are AlignedTranslation (Translator.translate)
    alignment_layer: int | None = None
    target_language: str | None = None  # a multilingual model's output language (its >>xx<< token)
    # Issue 27's options (decoding/logits.py), passed to translate() only when set.
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None
    no_repeat_ngram_size: int | None = None
    repetition_penalty: float | None = None

    def search_kwargs(self) -> dict:
        names = ("temperature", "top_k", "top_p", "seed", "no_repeat_ngram_size", "repetition_penalty")
        return {name: getattr(self, name) for name in names if getattr(self, name) is not None}


@dataclass
class _Job:
    sentences: list[str]
    options: DecodeOptions
    future: Future
    arrived: float = field(default_factory=time.monotonic)
    prefixes: list[str] | None = None  # a target prefix per sentence ("" for none)
    constraints: list[list[str]] | None = None  # glossary terms per sentence ([] for none)


class BatchingTranslator:
    """Queue + one worker thread around a :class:`Translator`; ``submit`` returns a Future of scored results."""

    def __init__(self, translator: Translator, max_batch_sentences: int = 64, max_wait_ms: float = 2.0,
                 max_queue_sentences: int = 2048):
        self.translator = translator
        self.max_batch_sentences = max_batch_sentences
        self.max_wait = max_wait_ms / 1000.0
        self.max_queue_sentences = max_queue_sentences
        self.jobs: deque[_Job] = deque()
        self.queued_sentences = 0
        self.decoding_sentences = 0  # taken off the queue, not yet answered
        self.batch_sizes: list[int] = []  # sentences per decoded batch (for /v1/info and tests)
        self.accepting = True
        self.condition = threading.Condition()
        self.worker = threading.Thread(target=self._work, name="transformer-mt-decoder", daemon=True)
        self.worker.start()

    def submit(self, sentences: list[str], options: DecodeOptions, prefixes: list[str] | None = None,
               constraints: list[list[str]] | None = None) -> Future:
        """Queue ``sentences`` (with ``prefixes``: the target prefix of each, "" for none; ``constraints``: the
        target terms each must hold, [] for none); the Future's result is one list of Translation (n-best) per
        sentence."""
        future: Future = Future()
        with self.condition:
            if not self.accepting:
                raise ShuttingDown("the server is shutting down")
            if self.queued_sentences and self.queued_sentences + len(sentences) > self.max_queue_sentences:
                raise QueueFull(f"{self.queued_sentences} sentences are waiting to be translated")
            self.jobs.append(_Job(list(sentences), options, future,
                                  prefixes=None if prefixes is None else list(prefixes),
                                  constraints=None if constraints is None else list(constraints)))
            self.queued_sentences += len(sentences)
            self.condition.notify()
        return future

    def close(self, timeout: float | None = None) -> None:
        """Stop accepting, decode what is queued, then stop the worker."""
        with self.condition:
            self.accepting = False
            self.condition.notify()
        self.worker.join(timeout)

    def _next_batch(self) -> list[_Job] | None:
        """Wait for a batch to close and take its jobs off the queue (None: closed and drained)."""
        with self.condition:
            while not self.jobs:
                if not self.accepting:
                    return None
                self.condition.wait()
            first = self.jobs[0]
            free_since = time.monotonic()
            latest = free_since + MAX_WAIT_FACTOR * self.max_wait
            while self.accepting:
                # Only requests that can join this batch (same options) keep it open.
                like = [job for job in self.jobs if _can_join(job, first)]
                if sum(len(job.sentences) for job in like) >= self.max_batch_sentences:
                    break
                quiet_until = max(free_since, like[-1].arrived) + self.max_wait
                remaining = min(quiet_until, latest) - time.monotonic()
                if remaining <= 0:
                    break
                self.condition.wait(remaining)
            batch, size = [], 0
            for job in list(self.jobs):
                if not _can_join(job, first):
                    continue
                if batch and size + len(job.sentences) > self.max_batch_sentences:
                    break
                batch.append(job)
                size += len(job.sentences)
            for job in batch:
                self.jobs.remove(job)
            self.queued_sentences -= size
            # A request whose caller gave up (cancelled) is not decoded; the others cannot be cancelled now.
            batch = [job for job in batch if job.future.set_running_or_notify_cancel()]
            self.decoding_sentences = sum(len(job.sentences) for job in batch)
            return batch

    def _work(self) -> None:
        while (batch := self._next_batch()) is not None:
            if batch:
                self._decode(batch)
            self.decoding_sentences = 0

    def _decode(self, batch: list[_Job]) -> None:
        options = batch[0].options
        sentences = [sentence for job in batch for sentence in job.sentences]
        alignment = {} if options.alignment is None else {
            "return_alignment": True, "alignment_unit": options.alignment, "alignment_layer": options.alignment_layer}
        extra = options.search_kwargs()
        if any(job.prefixes for job in batch):
            extra["prefix"] = [prefix for job in batch for prefix in (job.prefixes or [""] * len(job.sentences))]
        if any(job.constraints for job in batch):
            extra["constraints"] = [terms for job in batch for terms in (job.constraints or [[]] * len(job.sentences))]
        try:
            results = self.translator.translate(sentences, beam_size=options.beam_size, nbest=options.nbest,
                                                length_penalty=options.length_penalty, return_scores=True,
                                                target_language=options.target_language, **alignment, **extra)
        except Exception as exc:  # noqa: BLE001 -- reported to the requests, never the end of the worker
            if len(batch) > 1:  # one request's bad input must not fail the others: decode each on its own
                for job in batch:
                    self._decode([job])
            else:
                batch[0].future.set_exception(exc)
            return
        self.batch_sizes.append(len(sentences))
        start = 0
        for job in batch:
            job.future.set_result(results[start:start + len(job.sentences)])
            start += len(job.sentences)
