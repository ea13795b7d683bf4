"""When training stops, decided after every update: a budget spent (training.max_steps, max_epochs,
max_minutes) or SIGINT/SIGTERM received (the run then saves a checkpoint; a second signal stops it at once).

Under torchrun several ranks must stop at the same update, or the others would wait forever in their next
all-reduce: a signal on any rank stops all, and rank 0's clock, the one that validation time is counted on,
decides the time budget and the schedule's progress (shared in the same all-reduce).
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable

import torch

from ..config import TrainingConfig
from .distributed import DistributedContext

log = logging.getLogger("transformer_mt")


class Stopping:
    """Why a run stops. ``signal``: the name of the signal received (or "a signal to another rank");
    ``agreed_progress``: with several ranks, rank 0's schedule progress as of the last ``agree``."""

    def __init__(self, cfg: TrainingConfig, distributed: DistributedContext, device: torch.device):
        self.cfg, self.distributed, self.device = cfg, distributed, device
        self.signal: str | None = None
        self.agreed_progress: float | None = None
        self._previous_handlers: dict = {}

    def budget_spent(self, step: int, epoch: int, wall_seconds: Callable[[], float] | None) -> str | None:
        """The budget that ``step`` and ``epoch`` (and the training loop's seconds, unless ``wall_seconds`` is
        None) have reached, in words; None when none is."""
        cfg = self.cfg
        if cfg.max_steps and step >= cfg.max_steps:
            return f"reached training.max_steps={cfg.max_steps}"
        if cfg.max_epochs and epoch >= cfg.max_epochs:
            return f"reached training.max_epochs={cfg.max_epochs}"
        if wall_seconds is not None and self.time_spent(wall_seconds):
            return f"reached training.max_minutes={cfg.max_minutes}"
        return None

    def time_spent(self, wall_seconds: Callable[[], float]) -> bool:
        minutes = self.cfg.max_minutes
        return bool(minutes) and wall_seconds() >= minutes * 60

    def agree(self, step: int, epoch: int, wall_seconds: Callable[[], float],
              schedule_progress: Callable[[], float | None]) -> str | None:
        """Why training stops now (None: it goes on); checked after every update, the same on every rank."""
        if not self.distributed.enabled:
            return f"{self.signal} received" if self.signal else self.budget_spent(step, epoch, wall_seconds)
        is_main = self.distributed.is_main
        signals, time_spent, progress = self.distributed.sum(
            [float(self.signal is not None), float(is_main and self.time_spent(wall_seconds)),
             (schedule_progress() or 0.0) if is_main else 0.0], self.device)
        if self.cfg.schedule_horizon == "minutes":
            self.agreed_progress = progress
        if signals:
            self.signal = self.signal or "a signal to another rank"
            return f"{self.signal} received"
        reason = self.budget_spent(step, epoch, None)
        if reason is None and time_spent:
            reason = f"reached training.max_minutes={self.cfg.max_minutes}"
        return reason

    def signalled_anywhere(self) -> bool:
        """Whether a signal reached any rank: one may land after the last ``agree``, and the ranks decide
        together whether to save and stop."""
        if self.distributed.sum([float(self.signal is not None)], self.device)[0]:
            self.signal = self.signal or "a signal to another rank"
            return True
        return False

    def listen(self) -> None:
        """Catch SIGINT and SIGTERM until ``stop_listening``; outside the main thread they stay with the caller."""
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous_handlers[sig] = signal.signal(sig, self._received)
            except ValueError:
                pass  # not the main thread: signals stay with the caller

    def stop_listening(self) -> None:
        for sig, handler in self._previous_handlers.items():
            signal.signal(sig, handler)
        self._previous_handlers = {}

    def _received(self, signum, frame) -> None:
        if self.signal is not None:
            raise KeyboardInterrupt  # a second Ctrl-C stops at once
        self.signal = signal.Signals(signum).name
        if self.distributed.is_main:
            log.warning("%s received: finishing the current update, then saving a checkpoint", self.signal)
        else:  # at the level the other ranks still log
            log.error("rank %d: %s received: all ranks finish the current update, then rank 0 saves a checkpoint",
                      self.distributed.rank, self.signal)
