"""The learning-rate schedules: warmup, then inverse square root, noam, cosine, linear or constant.

``learning_rate_factor`` is the multiplier of ``training.lr`` at one update; the trainer gives the
cosine and linear decays the share of the time budget spent when ``schedule_horizon: minutes``.
"""

from __future__ import annotations

import math

from ..config import TrainingConfig


def learning_rate_factor(step: int, cfg: TrainingConfig, d_model: int, progress: float | None = None) -> float:
    """Multiplier of ``training.lr`` at optimizer update ``step`` (1-based).

    The cosine and linear schedules decay over ``progress`` (0 -> 1) when it is given (the
    minutes horizon: the share of the time budget spent), else over the updates after warmup
    up to ``training.max_steps``.
    """
    step = max(step, 1)
    warmup = cfg.warmup_steps
    if cfg.scheduler == "constant":
        return min(1.0, step / warmup) if warmup else 1.0
    if cfg.scheduler == "noam":
        # The paper's formula (section 5.3); training.lr is then a scale factor (often 1 or 2).
        return d_model ** -0.5 * min(step ** -0.5, step * max(warmup, 1) ** -1.5)
    if cfg.scheduler == "inverse_sqrt":
        # Same shape as noam, normalised so that the peak (at step == warmup) is training.lr.
        if not warmup:
            return 1.0 / math.sqrt(step)
        return min(step / warmup, math.sqrt(warmup / step))
    # cosine / linear: warmup, then decay to min_lr at the end of the horizon
    if warmup and step < warmup:
        return step / warmup
    if progress is None:
        total = max(cfg.max_steps, warmup + 1)
        progress = (step - warmup) / max(1, total - warmup)
    progress = min(1.0, max(0.0, progress))
    floor = cfg.min_lr / cfg.lr
    if cfg.scheduler == "linear":
        return floor + (1 - floor) * (1 - progress)
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def describe_schedule(cfg: TrainingConfig) -> str:
    """The schedule in words, for the training log."""
    text = f"{cfg.scheduler}, peak {cfg.lr:g} after {cfg.warmup_steps} warmup updates"
    if cfg.scheduler not in ("cosine", "linear"):
        return text
    if cfg.schedule_horizon == "minutes":
        return (f"{text}, decaying to {cfg.min_lr:g} over the {cfg.max_minutes:g}-minute budget "
                f"(schedule_horizon: minutes; time spent validating does not count)")
    return f"{text}, decaying to {cfg.min_lr:g} at update {cfg.max_steps} (schedule_horizon: steps)"
