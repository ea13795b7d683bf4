"""A training run's checkpoints: what they hold, the files they are written to, and continuing from one.

``checkpoint_last.pt`` holds everything resuming needs (state_dict with ``full``: optimizer, grad scaler,
every random state, the position in the data, the clocks of the schedule and the time budget) and
load_state puts it back, so a resumed run goes on exactly as if it had not stopped. A new run may start
from a parent's weights instead (start_from_parent, training.init_from). RunCheckpoints writes the files:
the last, the best, the last ``keep_last_n`` step checkpoints, and their average.

The functions take the Trainer (``trainer``) whose state they read or restore: its model, optimizer,
scaler, moving average and counters.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path

import numpy as np
import torch

from .. import checkpoint as ckpt
from ..config import config_from_dict
from ..decoding.translator import CHECKPOINT_NAMES
from ..errors import TransformerMTError
from ..safe_files import remove
from .ema import ExponentialMovingAverage
from .init_from import Parent
from .rundir import check_world_size, log_positions

log = logging.getLogger("transformer_mt")


def rng_state() -> dict:
    """This process's random states (Python, numpy, torch, CUDA) as a checkpoint holds them."""
    return {
        "python": random.getstate(),
        "numpy": ckpt.numpy_rng_state_to_plain(np.random.get_state()),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def restore_rng(rng: dict) -> None:
    random.setstate(rng["python"])
    np.random.set_state(ckpt.numpy_rng_state_from_plain(rng["numpy"]))
    torch.set_rng_state(rng["torch"].cpu())
    if rng.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in rng["cuda"]])


def state_dict(trainer, full: bool = True) -> dict:
    """A checkpoint: ``model`` holds the weights to translate with (the moving average when
    training.ema_decay is on); ``full`` adds what resuming needs, with EMA the raw weights too."""
    state = {
        "format_version": ckpt.FORMAT_VERSION,
        "config": trainer.config.to_dict(),
        "model": trainer.ema.state_dict_of(trainer.model) if trainer.ema is not None else trainer.model.state_dict(),
        "vocab_sizes": {"src": len(trainer.src_tok), "tgt": len(trainer.tgt_tok)},
        "tokenizer_sha256": trainer.data.tokenizer_sha256,
        "step": trainer.step,
        "epoch": trainer.epoch,
        "best_bleu": trainer.best_bleu,
        "init_from": trainer.init_from,
    }
    if full:
        state.update({
            "optimizer": trainer.optimizer.state_dict(),
            "scaler": trainer.scaler.state_dict(),
            "rng": rng_state(),
            "data_position": {"epoch": trainer.epoch, "batches_done": trainer.batches_done,
                              "world_size": trainer.distributed.world_size},
            "validations_without_improvement": trainer.validations_without_improvement,
            "elapsed": trainer.wall_seconds(),
            "validation_seconds": trainer.validation_seconds,
            "warmup_end_seconds": trainer.warmup_end_seconds,
            "nonfinite_total": trainer.nonfinite.total,
            "log_positions": log_positions(trainer.run_dir),
        })
        if trainer.ema is not None:
            state.update(raw_model=trainer.model.state_dict(), ema_updates=trainer.ema.updates)
    return state


def load_state(trainer, state: dict, path: Path) -> None:
    """Continue from ``state`` (checkpoint_last.pt, already checked against the config by prepare_run_dir)."""
    config_from_dict(state["config"], source=f"config stored in {path}")
    # With EMA, "model" holds the averaged weights and "raw_model" the trained ones.
    raw = state.get("raw_model", state["model"])
    try:
        trainer.model.load_state_dict(raw)
        if trainer.config.training.ema_decay and trainer.distributed.is_main:
            trainer.ema = ExponentialMovingAverage(trainer.model, trainer.config.training.ema_decay)
            if "raw_model" in state:
                trainer.ema.load(state["model"], state["ema_updates"])
    except (RuntimeError, KeyError, TypeError):
        raise TransformerMTError(f"checkpoint {path} does not fit the model of this config") from None
    trainer.optimizer.load_state_dict(state["optimizer"])
    trainer.scaler.load_state_dict(state["scaler"])
    check_world_size(state, path, trainer.distributed.world_size)
    # Several ranks: each continues its own random stream (dropout masks).
    restore_rng(state["rng_per_rank"][trainer.distributed.rank] if "rng_per_rank" in state else state["rng"])
    trainer.step = state["step"]
    trainer.epoch = state["data_position"]["epoch"]
    trainer.batches_done = state["data_position"]["batches_done"]
    trainer.best_bleu = state["best_bleu"]
    trainer.validations_without_improvement = state["validations_without_improvement"]
    trainer.elapsed = state["elapsed"]
    trainer.validation_seconds = state.get("validation_seconds", 0.0)
    trainer.warmup_end_seconds = state.get("warmup_end_seconds")
    trainer.nonfinite.total = state.get("nonfinite_total", 0)
    log.info("resumed from %s at step %d (epoch %d, batch %d)", path, trainer.step, trainer.epoch + 1,
             trainer.batches_done)


def start_from_parent(trainer, parent: Parent) -> None:
    """Take the parent's weights (and with training.init_reset_optimizer: false its optimizer state)."""
    trainer.init_from = parent.record()
    vocab = parent.state.get("vocab_sizes", {})
    if (vocab.get("src"), vocab.get("tgt")) != (len(trainer.src_tok), len(trainer.tgt_tok)):
        raise TransformerMTError(f"'training.init_from' {parent.checkpoint} was trained with vocabulary sizes "
                                 f"{vocab}, its tokenizer has {len(trainer.src_tok)}/{len(trainer.tgt_tok)} pieces")
    # The optimizer's moments belong to the weights that were trained: with EMA in the parent those are
    # "raw_model" ("model" is the average), so keeping the optimizer takes them; a fresh start takes the average.
    keep_optimizer = not trainer.config.training.init_reset_optimizer
    weights = parent.state.get("raw_model", parent.state["model"]) if keep_optimizer else parent.state["model"]
    try:
        trainer.model.load_state_dict(weights)
    except RuntimeError:
        raise TransformerMTError(f"'training.init_from' {parent.checkpoint} does not fit the model of its own "
                                 f"config; it was written by an incompatible version") from None
    kept = ""
    if keep_optimizer:
        trainer.optimizer.load_state_dict(parent.state["optimizer"])
        cfg = trainer.config.training
        for group in trainer.optimizer.param_groups:  # the moments carry on; the hyperparameters are this config's
            group.update(betas=tuple(cfg.betas), eps=cfg.eps, weight_decay=cfg.weight_decay)
        kept = " and its optimizer state"
    log.info("initialised from %s (step %s, SHA-256 %s): its weights%s; a new schedule from step 0",
             parent.checkpoint, parent.state.get("step"), parent.sha256, kept)


def save_checkpoints(trainer, is_best: bool) -> None:
    """Every rank calls this at the same update; rank 0 writes, with every rank's random state."""
    rng_per_rank = trainer.distributed.gather_to_main(rng_state())
    if not trainer.distributed.is_main:
        return
    state = state_dict(trainer, full=True)
    if trainer.distributed.enabled:
        state["rng_per_rank"] = rng_per_rank
    trainer.checkpoints.save(state, state_dict(trainer, full=False), trainer.step, is_best)


class RunCheckpoints:
    """The checkpoint files of a run directory, written atomically (checkpoint.atomic_save)."""

    def __init__(self, run_dir: Path, keep_last_n: int):
        self.run_dir, self.keep_last_n = Path(run_dir), keep_last_n

    def save(self, state: dict, weights: dict, step: int, is_best: bool) -> None:
        """Write ``state`` (state_dict, full) as checkpoint_last.pt, ``weights`` (state_dict, not full) as the
        step checkpoint (and the best one), and remove the step checkpoints beyond the last ``keep_last_n``."""
        ckpt.atomic_save(state, self.run_dir / CHECKPOINT_NAMES["last"])
        ckpt.atomic_save(weights, self.run_dir / f"checkpoint_step{step:08d}.pt")
        if is_best:
            ckpt.atomic_save(weights, self.run_dir / CHECKPOINT_NAMES["best"])
        for old in self.step_checkpoints()[:-self.keep_last_n]:
            remove(old)

    def step_checkpoints(self) -> list[Path]:
        return sorted(self.run_dir.glob("checkpoint_step*.pt"))

    def saved_at(self, step: int) -> bool:
        """Whether the last step checkpoint is that of ``step``."""
        saved = self.step_checkpoints()
        return bool(saved) and saved[-1].name.endswith(f"{step:08d}.pt")

    def average(self, count: int) -> tuple[Path, dict, int] | None:
        """Average the last ``count`` step checkpoints into checkpoint_average.pt: (its path, its weights, how
        many were averaged), or None when there are fewer than two."""
        paths = self.step_checkpoints()[-count:]
        if len(paths) < 2:
            log.info("only %d step checkpoint(s); nothing to average", len(paths))
            return None
        out = self.run_dir / CHECKPOINT_NAMES["average"]
        averaged = ckpt.average_checkpoints(paths, out)
        log.info("averaged %d checkpoints (%s .. %s) into %s", len(paths), paths[0].name, paths[-1].name, out)
        return out, averaged["model"], len(paths)
