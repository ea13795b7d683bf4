"""Training: from a Config to a self-contained run directory.

    from transformer_mt import load_config, train
    summary = train(load_config("configs/demo.yaml"), "runs/demo")

A run directory holds everything needed to translate and to resume:

    run.json, .lock           marks the directory as a run; held locked while training (see rundir.py)
    config.yaml               the resolved config
    spm.model                 SentencePiece model (spm.src/tgt.model when not joint)
    checkpoint_last.pt        model, optimizer, grad scaler, RNG states, data position, elapsed time
    checkpoint_best.pt        weights with the best validation BLEU
    checkpoint_step*.pt       the last ``keep_last_n`` validation checkpoints (for averaging)
    checkpoint_average.pt     average of the last ``average_last_n`` of those (if asked for)
    train.log, metrics.jsonl  human-readable log and one JSON object per log/validation event
    tensorboard/              the same metrics (and a few validation translations) for TensorBoard
    cache/                    the encoded corpora

Starting training over a run directory that already has a checkpoint resumes
it when the config is compatible, and refuses otherwise (unless overwrite).
Training only writes into a new, empty or run directory, one process at a time.
SIGINT/SIGTERM save a checkpoint and stop; resuming continues exactly where
the run stopped (same data order, same dropout masks on CPU).

The Trainer is the loop (``run``, ``run_epoch``, ``train_update``); its collaborators in this package
do the rest: run_data.py loads the tokenizers and corpora (data/mixing.py mixes several),
checkpoint_state.py writes checkpoints and resumes from them, validation.py validates (the weights,
their moving average, the averaged checkpoints), metrics.py writes train.log, metrics.jsonl and
TensorBoard, rundir.py claims and tidies the run directory, schedule.py gives the learning rate,
stopping.py says when to stop (budgets, signals, ranks agreeing) and loss.py counts skipped updates.
"""

from __future__ import annotations

import logging
import math
import random
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .. import checkpoint as ckpt
from ..config import Config, check_data_files, check_given_models
from ..data.batches import collate, make_batches
from ..data.mixing import MixedUpdates
from ..data.tokenizer import PAD_ID
from ..decoding.translator import CHECKPOINT_NAMES
from ..device import autocast, resolve_device, resolve_precision
from ..errors import TransformerMTError
from ..model import Transformer, build_model, check_model_fits
from .checkpoint_state import RunCheckpoints, load_state, save_checkpoints, start_from_parent
from .distributed import SINGLE_PROCESS, DistributedContext, shard_batches
from .ema import ExponentialMovingAverage
from .init_from import Parent, load_parent
from .loss import NonFiniteUpdates, label_smoothed_nll_loss
from .metrics import MetricsWriter, UpdateLog, setup_logging
from .run_data import RunData, load_run_data
from .rundir import cut_logs_to_checkpoint, prepare_run_dir, prepare_run_files
from .schedule import describe_schedule, learning_rate_factor
from .stopping import Stopping
from .validation import Validator, report_average, report_validation

log = logging.getLogger("transformer_mt")


class TrainingInterrupted(TransformerMTError):
    """Raised after SIGINT/SIGTERM once the checkpoint is saved."""


def check_before_run_dir(config: Config, device: str | None, resume: bool, overwrite: bool) -> None:
    """Mistakes that need no run directory, reported before it is touched (--overwrite deletes)."""
    cfg = config.training
    if not (cfg.max_steps or cfg.max_epochs or cfg.max_minutes or cfg.patience):
        raise TransformerMTError(
            "training has no end: set training.max_steps, training.max_epochs, training.max_minutes "
            "or training.patience")
    if resume and overwrite:
        raise TransformerMTError("--resume continues a run and --overwrite deletes it: give one of them")
    check_data_files(config, ("train", "valid"))
    resolve_device(device or cfg.device)  # a device this torch cannot run (meta, mps, ...) is refused now
    check_given_models(config.tokenizer, tags=config.data.symbols())
    # With the largest vocabulary the tokenizer may learn: before minutes of tokenizer training, not after.
    check_model_fits(config.model, config.tokenizer.vocab_size, config.tokenizer.vocab_size)


class Trainer:
    """Owns the model, optimizer and data of one run; ``run()`` trains until a budget is spent.

    Under torchrun, each process makes its own Trainer with the ``distributed`` context of
    ``distributed.setup()``: every rank trains its shard of each epoch's batches, and rank 0
    alone writes the run directory and validates.
    """

    def __init__(self, config: Config, run_dir, device: str | None = None, resume: bool = False,
                 overwrite: bool = False, show_progress: bool | None = None,
                 distributed: DistributedContext = SINGLE_PROCESS, prepare_only: bool = False):
        self.config = config
        self.prepare_only = prepare_only  # tokenizer and encoded corpora only: see prepare()
        self.run_dir = Path(run_dir)
        self.show_progress = show_progress
        self.distributed = distributed
        check_before_run_dir(config, device, resume, overwrite)
        # The parent of a new run is checked before the run directory is touched; a run resuming from its
        # own checkpoint needs it no more.
        self.parent: Parent | None = None
        if config.training.init_from and (overwrite or not (self.run_dir / CHECKPOINT_NAMES["last"]).exists()):
            self.parent = load_parent(config, self.run_dir)
        # Rank 0 claims and locks the run directory; the other ranks read the checkpoint it resumes.
        self.lock, resume_state = distributed.run_on_main(
            prepare_run_dir, config, self.run_dir, resume, overwrite, distributed.world_size) or (None, None)
        resuming = distributed.broadcast_from_main(resume_state is not None)
        if resuming and resume_state is None:
            resume_state = ckpt.load_checkpoint(self.run_dir / CHECKPOINT_NAMES["last"])
        self.log_handler = None
        self.metrics: MetricsWriter | None = None  # rank 0's
        self.progress_bar = None
        self.mixed_updates: MixedUpdates | None = None  # a CorpusMix's updates (data/mixing.py)
        self.closed = False
        try:
            self._setup(resume_state, device)
        except OSError as exc:
            self.close()
            raise TransformerMTError(
                f"run directory {self.run_dir} is damaged or not writable: {exc.strerror or exc}"
                f"{f': {exc.filename}' if exc.filename else ''}; fix that file, or train into a new "
                f"--output-dir") from None
        except BaseException:
            self.close()
            raise

    def _setup(self, resume_state: dict | None, device: str | None) -> None:
        cfg = self.config.training
        if not self.distributed.is_main:
            log.setLevel(logging.ERROR)  # rank 0 tells the story (and warns about the shared data)
        self.distributed.run_on_main(self._prepare_run_files, resume_state)

        self.device = resolve_device(device or cfg.device)
        self.precision, precision_reason = resolve_precision(cfg.precision, self.device)
        self.seed_everything(cfg.seed)
        # Rank 0 trains the tokenizer and encodes the corpora into the cache; the others then read them.
        self.distributed.run_on_main(self._load_data, resume_state)
        if not self.distributed.is_main:
            self._load_data(resume_state)
        if self.prepare_only:
            return

        self._build_model()
        self.step = 0
        self.epoch = 0
        self.batches_done = 0  # batches of the current epoch already consumed (by this rank)
        self.best_bleu = -1.0
        self.validations_without_improvement = 0
        self.nonfinite = NonFiniteUpdates(cfg.max_nonfinite_in_row, self.write_metrics)
        self.elapsed = 0.0  # seconds of the training loop in earlier sessions of this run (validation included)
        self.validation_seconds = 0.0  # of those and this session's, the seconds spent validating
        self.warmup_end_seconds = None  # minutes horizon: training seconds when warmup ended
        self.clock = time.monotonic  # tests replace it with a fake clock
        self.session_start = self.clock()
        self.stopping = Stopping(cfg, self.distributed, self.device)
        self.ema: ExponentialMovingAverage | None = None  # rank 0's: it alone validates and saves
        if resume_state:
            load_state(self, resume_state, self.run_dir / CHECKPOINT_NAMES["last"])
            self.init_from = resume_state.get("init_from")
        elif self.parent is not None:
            start_from_parent(self, self.parent)
        else:
            self.init_from = None
        if cfg.ema_decay and self.distributed.is_main and self.ema is None:
            self.ema = ExponentialMovingAverage(self.model, cfg.ema_decay)  # from the initial (or parent's) weights
        self.checkpoints = RunCheckpoints(self.run_dir, cfg.keep_last_n)
        self.validator = Validator(self.model, self.compiled_model, self.data, self.config, self.device,
                                   self.compute_loss)
        self._log_setup(precision_reason)

    def _prepare_run_files(self, resume_state: dict | None) -> None:
        """Rank 0's share of the set-up: the run directory's logs, leftovers, tokenizer and config files."""
        cut = cut_logs_to_checkpoint(self.run_dir, resume_state.get("log_positions", {})) if resume_state else {}
        self.log_handler = setup_logging(self.run_dir)
        prepare_run_files(self.config, self.run_dir, cut, resume_state is not None,
                          self.parent.record() if self.parent else None)
        # A resumed run's TensorBoard hides what an earlier session logged after the checkpoint, as the logs do.
        self.metrics = MetricsWriter(self.run_dir, tensorboard="auto" if self.config.training.tensorboard else False,
                                     purge_step=resume_state["step"] + 1 if resume_state else None)
        if self.metrics.tensorboard:
            log.info("TensorBoard event files in %s (tensorboard --logdir %s)", self.run_dir / "tensorboard",
                     self.run_dir)

    def _load_data(self, resume_state: dict | None) -> None:
        """Tokenizers (trained on first use) and the encoded corpora (cached in the run directory)."""
        self.data: RunData = load_run_data(self.config, self.run_dir, None if resume_state or self.parent is None
                                           else self.parent.tokenizers, resume_state)
        if self.data.train_mix is not None:
            self.mixed_updates = MixedUpdates(self.data.train_mix, self.config.training.accumulate,
                                              self.config.training.seed, self.distributed.rank,
                                              self.config.model.source_eos)

    # The run's data, as tests and scripts read it.
    src_tok = property(lambda self: self.data.src_tok)
    tgt_tok = property(lambda self: self.data.tgt_tok)
    train_data = property(lambda self: self.data.train_data)
    train_mix = property(lambda self: self.data.train_mix)
    valid_data = property(lambda self: self.data.valid_data)

    def _build_model(self) -> None:
        """The model (compiled, and wrapped for data-parallel training under torchrun), optimizer and scaler."""
        config, cfg = self.config, self.config.training
        self.model: Transformer = build_model(config.model, len(self.src_tok), len(self.tgt_tok), PAD_ID).to(self.device)
        self.compiled_model = torch.compile(self.model) if cfg.compile else self.model
        self.train_model = self.compiled_model
        if self.distributed.enabled:
            # Every rank built the same initial weights from the seed (DDP broadcasts rank 0's anyway);
            # dropout must differ between ranks, as it would between the batches of one process.
            torch.manual_seed(cfg.seed * 1000 + self.distributed.rank)
            self.train_model = self.distributed.data_parallel(self.compiled_model, self.device)
        optimizer_cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
        # fused=True: one kernel for all parameters instead of several ops per tensor.
        self.optimizer = optimizer_cls(self.model.parameters(), lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps,
                                       weight_decay=cfg.weight_decay, fused=True)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.precision == "fp16" and self.device.type == "cuda")

    def _log_setup(self, precision_reason: str) -> None:
        num_params = sum(p.numel() for p in self.model.parameters())
        log.info("run %s: %d training pairs, %d validation pairs, vocab %d/%d, %.2fM parameters, device %s%s",
                 self.run_dir, len(self.train_data), sum(len(v.sources) for v in self.data.valid_sets), len(self.src_tok),
                 len(self.tgt_tok),
                 num_params / 1e6, self.device,
                 f" ({torch.get_num_threads()} threads)" if self.device.type == "cpu" else "")
        if self.distributed.enabled:
            log.info("data-parallel: world size %d, backend %s; rank 0 writes and validates",
                     self.distributed.world_size, self.distributed.backend)
        if self.config.data.multilingual():
            log.info("multilingual: %d directions (%s), each source starting with its target-language token (%s)",
                     len(self.data.valid_sets), ", ".join(f"{s} -> {t}" for s, t in self.config.data.directions()),
                     ", ".join(self.config.data.language_tokens()))
        log.info("precision %s (%s)", self.precision, precision_reason)
        log.info("learning rate: %s", describe_schedule(self.config.training))

    @staticmethod
    def seed_everything(seed: int) -> None:
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)

    # --- the averaged checkpoint, records ---------------------------------------------------------

    def average(self) -> Path | None:
        """Average the last training.average_last_n step checkpoints into checkpoint_average.pt, and validate
        the average as a checkpoint is validated (the log says which to decode with)."""
        averaged = self.checkpoints.average(self.config.training.average_last_n)
        if averaged is None:
            return None
        path, weights, count = averaged
        result = self.validator.validate_weights(weights, self.step, self.epoch)
        result.update(type="valid_average", checkpoints=count, best_bleu=self.best_bleu)
        self.write_metrics(result)
        report_average(result)
        return path

    def write_metrics(self, record: dict) -> None:
        if self.metrics is not None:  # rank 0 alone writes
            self.metrics.write(record)

    # --- the learning-rate schedule ----------------------------------------------------------------

    def wall_seconds(self) -> float:
        """Seconds of the training loop so far, all sessions, validation included: what max_minutes bounds."""
        return self.elapsed + self.clock() - self.session_start

    def schedule_progress(self) -> float | None:
        """With the minutes horizon, the share of the time budget spent training (None: the steps horizon).

        Time spent validating does not count: the progress is the training seconds since warmup
        ended over the budget less those of warmup and less the seconds validated so far, so it
        reaches 1 exactly when the budget ends.
        """
        cfg = self.config.training
        if cfg.schedule_horizon != "minutes":
            return None
        trained = self.wall_seconds() - self.validation_seconds
        if self.step + 1 < cfg.warmup_steps:
            return 0.0  # still warming up; the decay starts where warmup ends, as with the steps horizon
        if self.warmup_end_seconds is None:
            self.warmup_end_seconds = trained
        decay_budget = cfg.max_minutes * 60 - self.validation_seconds - self.warmup_end_seconds
        return min(1.0, (trained - self.warmup_end_seconds) / decay_budget) if decay_budget > 0 else 1.0

    def set_learning_rate(self) -> float:
        """Set the learning rate of the next update (number ``self.step + 1``) and return it."""
        cfg = self.config.training
        # Several ranks: rank 0's progress, shared by agree_to_stop, so that every rank uses the same rate.
        progress = self.stopping.agreed_progress if self.distributed.enabled else self.schedule_progress()
        lr = cfg.lr * learning_rate_factor(self.step + 1, cfg, self.config.model.d_model, progress)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    # --- one update ------------------------------------------------------------------------------

    def compute_loss(self, batch, model):
        """Summed label-smoothed loss and NLL of one batch: ``train_model`` while training, else the
        ``compiled_model`` (no DDP: validation runs on rank 0 alone)."""
        real = batch.tgt_output != PAD_ID
        with autocast(self.device, self.precision):
            logits = model(batch.src_tokens, batch.tgt_input, real)
        return label_smoothed_nll_loss(logits, batch.tgt_output[real], self.config.training.label_smoothing, PAD_ID)

    def train_update(self, batches) -> dict | None:
        """One optimizer update over ``batches`` (gradient accumulation); None if skipped as non-finite."""
        cfg = self.config.training
        self.model.train()
        self.set_learning_rate()
        world_size = self.distributed.world_size
        # Normalise by the target tokens of the whole update, on all ranks, so that accumulation over
        # batches and ranks equals one big batch. DDP averages the ranks' gradients: hence x world_size.
        total_tokens = int(self.distributed.sum([sum(b.num_tokens for b in batches)], self.device)[0])
        loss_sum = nll_sum = 0.0
        for i, batch in enumerate(batches):
            batch = batch.to(self.device)
            # Ranks exchange gradients once per update, after its last batch.
            accumulating = self.distributed.enabled and i < len(batches) - 1
            with self.train_model.no_sync() if accumulating else nullcontext():
                loss, nll = self.compute_loss(batch, self.train_model)
                scaled = loss / total_tokens if world_size == 1 else loss * (world_size / total_tokens)
                self.scaler.scale(scaled).backward()
            loss_sum += loss.item()
            nll_sum += nll.item()
        loss_sum, nll_sum = self.distributed.sum([loss_sum, nll_sum], self.device)
        self.scaler.unscale_(self.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.clip_norm or float("inf"))
        if not (math.isfinite(loss_sum) and math.isfinite(grad_norm.item())):
            self.optimizer.zero_grad(set_to_none=True)
            if self.scaler.is_enabled():
                self.scaler.update()  # fp16: lowers the scale; overflow is routine, not an error
                return None
            self.nonfinite.skipped(self.step + 1)
            return None
        self.nonfinite.finite()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update()
        self.step += 1
        return {"loss": loss_sum / total_tokens, "nll": nll_sum / total_tokens, "tokens": total_tokens,
                "grad_norm": grad_norm.item()}

    # --- validation (validation.py) ---------------------------------------------------------------

    def validation_loss(self) -> tuple[float, float]:
        return self.validator.loss()

    def validate(self) -> dict:
        """Validation loss and BLEU, of the moving average of the weights when training.ema_decay is on."""
        return self.validator.validate(self.step, self.epoch, self.ema)

    @property
    def last_validation_examples(self) -> list[tuple[str, str, str]]:
        return self.validator.examples

    def validate_and_save(self) -> bool:
        """Validate, log, save checkpoints; return True when early stopping says stop.

        The time this takes is added to ``validation_seconds`` (it does not advance the schedule).
        Every rank calls this at the same update; rank 0 validates and decides.
        """
        start = self.clock()
        is_best = self.validate_and_log() if self.distributed.is_main else False
        self.validation_seconds += self.clock() - start
        save_checkpoints(self, is_best)
        patience = self.config.training.patience
        return self.distributed.broadcast_from_main(
            bool(patience) and self.validations_without_improvement >= patience)

    def validate_and_log(self) -> bool:
        """Validate, write the record and the log line; return whether this is the best BLEU so far."""
        result = self.validate()
        is_best = result["bleu"] > self.best_bleu
        if is_best:
            self.best_bleu = result["bleu"]
            self.validations_without_improvement = 0
        else:
            self.validations_without_improvement += 1
        result["best_bleu"] = self.best_bleu
        report_validation(result, is_best, self.last_validation_examples, self.metrics)
        return is_best

    # --- the loop --------------------------------------------------------------------------------

    def agree_to_stop(self) -> str | None:
        """Why training stops now (None: it goes on); after every update, the same on every rank (stopping.py)."""
        return self.stopping.agree(self.step, self.epoch, self.wall_seconds, self.schedule_progress)

    def run(self) -> dict:
        """Train until a budget is spent, a signal arrives or early stopping says so; return a summary."""
        cfg = self.config.training
        if self.closed:
            raise TransformerMTError(f"this Trainer of {self.run_dir} has ended (its lock is released); create a "
                                     f"new one to train on")
        try:
            self.stopping.listen()
            self.session_start = self.clock()
            stop_reason = self.agree_to_stop()
            hide = (not self.show_progress) if self.show_progress is not None else None
            self.progress_bar = tqdm(total=cfg.max_steps or None, initial=self.step, unit="step", dynamic_ncols=True,
                                     disable=hide if self.distributed.is_main else True, mininterval=1.0)
            self.update_log = UpdateLog(cfg.log_every, self.write_metrics, self.progress_bar)
            while stop_reason is None:
                stop_reason = self.run_epoch()
            self.progress_bar.close()
            self.elapsed = self.wall_seconds()
            self.session_start = self.clock()
            # A signal may land on one rank after the last agree_to_stop: decide together whether to save and stop.
            if self.stopping.signalled_anywhere():
                save_checkpoints(self, is_best=False)
                # Under torchrun the same number of processes must resume (check_world_size): say how.
                launcher = (f"torchrun <the same --nnodes/--nproc_per_node: {self.distributed.world_size} processes> "
                            f"-m transformer_mt" if self.distributed.enabled else "transformer-mt")
                raise TrainingInterrupted(
                    f"training stopped by {self.stopping.signal} at step {self.step}; checkpoint saved in "
                    f"{self.run_dir}. Resume with: {launcher} train --config <same config> "
                    f"--output-dir {self.run_dir} --resume")
            log.info("training stopped: %s", stop_reason)
            if not self.distributed.broadcast_from_main(self.is_main_and_saved_this_step()):
                self.validate_and_save()
            if cfg.average_last_n and self.distributed.is_main:
                self.average()
        finally:
            if self.progress_bar is not None:
                self.progress_bar.close()
            self.stopping.stop_listening()
            self.close()
        return {"run_dir": str(self.run_dir), "step": self.step, "epoch": self.epoch, "best_bleu": self.best_bleu,
                "train_seconds": self.elapsed, "stop_reason": stop_reason}

    def run_epoch(self) -> str | None:
        """Train on this rank's share of the current epoch, from where the run stands in it.

        Returns why training stops, or None when the epoch ended and training goes on.
        """
        cfg = self.config.training
        if self.mixed_updates is None:
            all_batches = make_batches(self.train_data, cfg.batch_tokens, cfg.seed, self.epoch)
        else:
            all_batches = self.train_mix.make_batches(cfg.batch_tokens, cfg.seed, self.epoch)
        batches = shard_batches(all_batches, self.distributed.rank, self.distributed.world_size)
        if self.distributed.enabled and self.batches_done == 0:
            log.info("epoch %d: %d batches, %d per rank (%d repeated to even out the ranks)", self.epoch + 1,
                     len(all_batches), len(batches), len(batches) * self.distributed.world_size - len(all_batches))
        stop_reason = None
        while self.batches_done < len(batches) and stop_reason is None:
            first = self.batches_done
            group = batches[first:first + cfg.accumulate]
            self.batches_done += len(group)
            if self.mixed_updates is None:
                stats = self.train_update([collate(self.train_data, indices, self.config.model.source_eos)
                                           for indices in group])
            else:
                stats = self.train_update(self.mixed_updates.group(batches, first, self.epoch))
            if stats is not None:
                self.update_log.update(stats, self.step, self.epoch, self.optimizer.param_groups[0]["lr"])
            stop_reason = self.agree_to_stop()
            if stop_reason is None and stats is not None and self.step % cfg.validate_every == 0:
                validation_start = time.time()
                if self.validate_and_save():
                    stop_reason = f"early stopping: no BLEU improvement in {cfg.patience} validations"
                self.update_log.leave_out(time.time() - validation_start)  # tokens/s excludes validation time
        if self.batches_done >= len(batches):
            self.epoch += 1
            self.batches_done = 0
            log.info("epoch %d done at step %d", self.epoch, self.step)
            if stop_reason is None:
                stop_reason = self.agree_to_stop()
        return stop_reason

    def is_main_and_saved_this_step(self) -> bool:
        return self.distributed.is_main and self.checkpoints.saved_at(self.step)

    def close(self) -> None:
        """Stop writing train.log and release the run directory's lock (run() does this when it ends)."""
        if self.log_handler is not None:
            log.removeHandler(self.log_handler)
            self.log_handler.close()
            self.log_handler = None
        if self.metrics is not None:
            self.metrics.close()
            self.metrics = None
        if self.mixed_updates is not None:
            self.mixed_updates.close()
        if self.lock is not None:
            self.lock.release()
        # The DistributedDataParallel wrapper holds the process group: let it go now, so the group's
        # threads are joined by distributed.teardown() and not at interpreter exit (a SIGABRT there).
        self.train_model = None
        self.closed = True


def prepare(config: Config, output_dir, overwrite: bool = False) -> dict:
    """Train the tokenizer and encode the corpora into a run directory, and stop there.

    ``train`` with the same config and output directory then reuses both. Worth it before a
    multi-GPU job (one process encodes while the GPUs wait otherwise) and to check a big corpus.
    """
    trainer = Trainer(config, output_dir, overwrite=overwrite, prepare_only=True)
    trainer.close()
    return {"run_dir": str(trainer.run_dir), "train_pairs": len(trainer.train_data),
            "valid_pairs": sum(len(v.data) for v in trainer.data.valid_sets),
            "vocab_sizes": (len(trainer.src_tok), len(trainer.tgt_tok))}


def train(config: Config, output_dir, device: str | None = None, resume: bool = False, overwrite: bool = False,
          show_progress: bool | None = None, distributed: DistributedContext = SINGLE_PROCESS) -> dict:
    """Train a model as configured and return a summary (run_dir, step, best_bleu, train_seconds, ...).

    Under torchrun, pass the context of ``transformer_mt.training.distributed.setup()`` (see there).
    """
    return Trainer(config, output_dir, device, resume, overwrite, show_progress, distributed).run()
