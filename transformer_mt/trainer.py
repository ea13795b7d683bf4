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
    cache/                    the encoded corpora

Starting training over a run directory that already has a checkpoint resumes
it when the config is compatible, and refuses otherwise (unless overwrite).
Training only writes into a new, empty or run directory, one process at a time.
SIGINT/SIGTERM save a checkpoint and stop; resuming continues exactly where
the run stopped (same data order, same dropout masks on CPU).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from . import checkpoint as ckpt
from .config import Config, check_data_files, config_from_dict, save_config, training_warnings
from .data import collate, count_oversized, encode_parallel, make_batches, read_parallel
from .device import autocast, keep_freed_cpu_memory, resolve_device, resolve_precision
from .errors import TransformerMTError
from .loss import label_smoothed_nll_loss
from .model import Transformer, build_model
from .rundir import RunLock, claim_run_dir, remove_interrupted_writes
from .scoring import resolve_tokenize, score
from .tokenizer import PAD_ID, build_tokenizers
from .translator import CHECKPOINT_NAMES, Translator

log = logging.getLogger("transformer_mt")

# Logs that a resumed run cuts back to their length at its checkpoint (the steps after it are trained again).
RESUMED_LOGS = ("train.log", "metrics.jsonl")


class TrainingInterrupted(TransformerMTError):
    """Raised after SIGINT/SIGTERM once the checkpoint is saved."""


def learning_rate_factor(step: int, cfg, d_model: int, progress: float | None = None) -> float:
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


def setup_logging(run_dir: Path) -> logging.Handler:
    log.setLevel(logging.INFO)
    log.propagate = False  # our own console handler below; avoid printing every line twice
    handler = logging.FileHandler(run_dir / "train.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    if not any(isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler) for h in log.handlers):
        console = logging.StreamHandler()
        console.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(console)
    return handler


def read_saved_config(path: Path) -> tuple[dict | None, str | None]:
    """The run's config.yaml as a dict, or (None, why) when it is missing or damaged."""
    import yaml

    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, "missing"
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        return None, f"unreadable: {type(exc).__name__}"
    if not isinstance(raw, dict) or not all(isinstance(v, dict) for v in raw.values()):
        return None, "not a mapping of sections"
    return raw, None


def prepare_run_dir(config: Config, run_dir: Path, resume: bool, overwrite: bool) -> tuple[RunLock, dict | None]:
    """Claim and lock the run directory; return the lock and, when training resumes, checkpoint_last's state.

    The checkpoint's own config decides whether the new config may continue it.
    """
    lock = claim_run_dir(run_dir, overwrite)
    try:
        last = run_dir / CHECKPOINT_NAMES["last"]
        if last.exists():
            state = ckpt.load_checkpoint(last)
            if "optimizer" not in state:
                raise TransformerMTError(f"{last} holds only model weights and cannot be resumed from")
            diffs = ckpt.config_differences(state["config"], config.to_dict())
            if diffs:
                raise TransformerMTError(
                    f"output directory {run_dir} holds a run with a different config ({'; '.join(diffs[:5])}); "
                    f"use another --output-dir, or pass --overwrite to delete that run")
            return lock, state
        if resume:
            raise TransformerMTError(f"--resume was given but {last} does not exist; start without --resume")
        others = sorted(p.name for p in run_dir.glob("checkpoint_*.pt"))
        if others:
            raise TransformerMTError(
                f"output directory {run_dir} holds checkpoints ({', '.join(others[:3])}) but no {last.name} to "
                f"resume from; starting again would overwrite them: use another --output-dir, or pass --overwrite "
                f"to delete that run")
        return lock, None
    except BaseException:
        lock.release()
        raise


def discard_stale_tokenizer(config: Config, run_dir: Path) -> None:
    """Before the first checkpoint, config.yaml says what the run's tokenizer and cached ids were built from.

    With no checkpoint (e.g. an earlier start failed on a config mistake) there is nothing to
    lose, but a tokenizer or cached ids built for other (or unknown) data must not be reused.
    """
    saved, problem = read_saved_config(run_dir / "config.yaml")
    diffs = ckpt.config_differences(saved or {}, config.to_dict())
    if problem in (None, "missing") and not any(d.startswith(("data.", "tokenizer.")) for d in diffs):
        return
    if problem not in (None, "missing"):
        log.warning("config.yaml in %s is %s; rebuilding the run's tokenizer and encoded corpus", run_dir, problem)
    for path in list(run_dir.glob("spm*.model")) + list(run_dir.glob("spm*.vocab")):
        path.unlink()
    shutil.rmtree(run_dir / "cache", ignore_errors=True)


LOG_TAIL_BYTES = 4096  # the bytes before a log's recorded end whose hash identifies that log


def _tail_sha256(handle, size: int) -> str:
    """SHA-256 of the LOG_TAIL_BYTES bytes of an open log before byte ``size``; leaves the handle at ``size``."""
    handle.seek(max(0, size - LOG_TAIL_BYTES))
    return hashlib.sha256(handle.read(size - handle.tell())).hexdigest()


def log_positions(run_dir: Path) -> dict:
    """Where train.log and metrics.jsonl end now, and a hash of the bytes just before (for the checkpoint)."""
    positions = {}
    for name in RESUMED_LOGS:
        try:
            with open(run_dir / name, "rb") as handle:
                size = handle.seek(0, os.SEEK_END)
                positions[name] = {"size": size, "tail_sha256": _tail_sha256(handle, size)}
        except FileNotFoundError:
            positions[name] = {"size": 0, "tail_sha256": hashlib.sha256(b"").hexdigest()}
    return positions


def cut_logs_to_checkpoint(run_dir: Path, positions: dict) -> dict:
    """Truncate train.log/metrics.jsonl to where they ended when the checkpoint was written.

    Returns, per file past that point, the number of lines cut, or None where it was left alone.

    A run killed after its last checkpoint logged steps that the resumed run trains again;
    keeping both would list those steps twice. A log is cut only if the bytes before that
    point are the ones the checkpoint saw (not a log replaced or copied from elsewhere).
    """
    removed = {}
    for name in RESUMED_LOGS:
        path, position = run_dir / name, positions.get(name)
        if not position or not path.is_file() or path.stat().st_size <= position["size"]:
            continue
        size = position["size"]
        with open(path, "r+b") as handle:
            if _tail_sha256(handle, size) != position["tail_sha256"]:
                removed[name] = None
                continue
            removed[name] = handle.read().count(b"\n")
            handle.truncate(size)
    return removed


class Trainer:
    """Owns the model, optimizer and data of one run; ``run()`` trains until a budget is spent."""

    def __init__(self, config: Config, run_dir, device: str | None = None, resume: bool = False,
                 overwrite: bool = False, show_progress: bool | None = None):
        self.config = config
        self.run_dir = Path(run_dir)
        self.show_progress = show_progress
        cfg = config.training
        # Mistakes that need no run directory are reported before it is touched (--overwrite deletes).
        if not (cfg.max_steps or cfg.max_epochs or cfg.max_minutes or cfg.patience):
            raise TransformerMTError(
                "training has no end: set training.max_steps, training.max_epochs, training.max_minutes "
                "or training.patience")
        if resume and overwrite:
            raise TransformerMTError("--resume continues a run and --overwrite deletes it: give one of them")
        check_data_files(config, ("train", "valid"))
        self.lock, resume_state = prepare_run_dir(config, self.run_dir, resume, overwrite)
        self.log_handler = None
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
        config, cfg = self.config, self.config.training
        cut = cut_logs_to_checkpoint(self.run_dir, resume_state.get("log_positions", {})) if resume_state else {}
        self.log_handler = setup_logging(self.run_dir)
        for name, lines in cut.items():
            if lines is None:
                log.warning("%s does not match checkpoint_last.pt (changed since, or from another run): left as "
                            "it is, so records after the checkpoint may repeat", self.run_dir / name)
                continue
            log.info("%s: removed %d lines written after checkpoint_last.pt (the run goes on from that "
                     "checkpoint and logs those steps again)", name, lines)
        for path in remove_interrupted_writes(self.run_dir):
            log.info("removed %s, left by an interrupted write", path)
        if resume_state is None:
            discard_stale_tokenizer(config, self.run_dir)
        else:
            self.warn_if_config_yaml_damaged()
        save_config(config, self.run_dir / "config.yaml")
        for message in training_warnings(config):
            log.warning("%s", message)

        self.device = resolve_device(device or cfg.device)
        self.precision, precision_reason = resolve_precision(cfg.precision, self.device)
        if cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)
        if self.device.type == "cpu":
            keep_freed_cpu_memory()
        self.seed_everything(cfg.seed)

        data = config.data
        self.src_tok, self.tgt_tok = build_tokenizers(
            self.run_dir, config.tokenizer, data.path("train", data.src_lang), data.path("train", data.tgt_lang))
        self.tokenizer_sha256 = ckpt.tokenizer_checksums(self.src_tok.model_path, self.tgt_tok.model_path)
        if resume_state:
            ckpt.check_tokenizer_checksums(resume_state, self.src_tok.model_path, self.tgt_tok.model_path,
                                           self.run_dir / CHECKPOINT_NAMES["last"], actual=self.tokenizer_sha256)
        self.train_data = encode_parallel(
            data.path("train", data.src_lang), data.path("train", data.tgt_lang), self.src_tok, self.tgt_tok,
            data.max_len, cache_dir=self.run_dir / "cache", unpunctuated_copies=data.unpunctuated_copies,
            seed=cfg.seed)
        oversized = count_oversized(self.train_data, cfg.batch_tokens)
        if oversized:
            log.warning("%d training sentences are longer than training.batch_tokens=%d (padded tokens); "
                        "each gets a batch of its own, over that budget: raise training.batch_tokens or lower "
                        "data.max_len", oversized, cfg.batch_tokens)
        self.valid_src, self.valid_ref = read_parallel(data.path("valid", data.src_lang),
                                                       data.path("valid", data.tgt_lang))
        self.valid_data = encode_parallel(
            data.path("valid", data.src_lang), data.path("valid", data.tgt_lang), self.src_tok, self.tgt_tok,
            data.max_len, cache_dir=self.run_dir / "cache")

        self.model: Transformer = build_model(config.model, len(self.src_tok), len(self.tgt_tok), PAD_ID).to(self.device)
        self.train_model = torch.compile(self.model) if cfg.compile else self.model
        optimizer_cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
        # fused=True: one kernel for all parameters instead of several ops per tensor.
        self.optimizer = optimizer_cls(self.model.parameters(), lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps,
                                       weight_decay=cfg.weight_decay, fused=True)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.precision == "fp16" and self.device.type == "cuda")

        self.step = 0
        self.epoch = 0
        self.batches_done = 0  # batches of the current epoch already consumed
        self.best_bleu = -1.0
        self.validations_without_improvement = 0
        self.nonfinite_in_row = 0
        self.nonfinite_total = 0
        self.elapsed = 0.0  # seconds of the training loop in earlier sessions of this run (validation included)
        self.validation_seconds = 0.0  # of those and this session's, the seconds spent validating
        self.clock = time.monotonic  # tests replace it with a fake clock
        self.session_start = self.clock()
        self.stop_signal = None
        if resume_state:
            self.load_state(resume_state, self.run_dir / CHECKPOINT_NAMES["last"])

        num_params = sum(p.numel() for p in self.model.parameters())
        log.info("run %s: %d training pairs, %d validation pairs, vocab %d/%d, %.2fM parameters, device %s",
                 self.run_dir, len(self.train_data), len(self.valid_src), len(self.src_tok), len(self.tgt_tok),
                 num_params / 1e6, self.device)
        log.info("precision %s (%s)", self.precision, precision_reason)
        log.info("learning rate: %s", self.describe_schedule())

    # --- state -----------------------------------------------------------------------------------

    @staticmethod
    def seed_everything(seed: int) -> None:
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)

    def state_dict(self, full: bool = True) -> dict:
        state = {
            "format_version": ckpt.FORMAT_VERSION,
            "config": self.config.to_dict(),
            "model": self.model.state_dict(),
            "vocab_sizes": {"src": len(self.src_tok), "tgt": len(self.tgt_tok)},
            "tokenizer_sha256": self.tokenizer_sha256,
            "step": self.step,
            "epoch": self.epoch,
            "best_bleu": self.best_bleu,
        }
        if full:
            state.update({
                "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict(),
                "rng": {
                    "python": random.getstate(),
                    "numpy": ckpt.numpy_rng_state_to_plain(np.random.get_state()),
                    "torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                },
                "data_position": {"epoch": self.epoch, "batches_done": self.batches_done},
                "validations_without_improvement": self.validations_without_improvement,
                "elapsed": self.wall_seconds(),
                "validation_seconds": self.validation_seconds,
                "nonfinite_total": self.nonfinite_total,
                "log_positions": log_positions(self.run_dir),
            })
        return state

    def warn_if_config_yaml_damaged(self) -> None:
        _, problem = read_saved_config(self.run_dir / "config.yaml")
        if problem is not None:
            log.warning("config.yaml in %s is %s; it is written again from the config (the checkpoint's own "
                        "config matched it)", self.run_dir, problem)

    def load_state(self, state: dict, path: Path) -> None:
        """Continue from ``state`` (checkpoint_last.pt, already checked against the config by prepare_run_dir)."""
        config_from_dict(state["config"], source=f"config stored in {path}")
        try:
            self.model.load_state_dict(state["model"])
        except RuntimeError:
            raise TransformerMTError(f"checkpoint {path} does not fit the model of this config") from None
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        rng = state["rng"]
        random.setstate(rng["python"])
        np.random.set_state(ckpt.numpy_rng_state_from_plain(rng["numpy"]))
        torch.set_rng_state(rng["torch"].cpu())
        if rng.get("cuda") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([s.cpu() for s in rng["cuda"]])
        self.step = state["step"]
        self.epoch = state["data_position"]["epoch"]
        self.batches_done = state["data_position"]["batches_done"]
        self.best_bleu = state["best_bleu"]
        self.validations_without_improvement = state["validations_without_improvement"]
        self.elapsed = state["elapsed"]
        self.validation_seconds = state.get("validation_seconds", 0.0)
        self.nonfinite_total = state.get("nonfinite_total", 0)
        log.info("resumed from %s at step %d (epoch %d, batch %d)", path, self.step, self.epoch + 1,
                 self.batches_done)

    def save_checkpoints(self, is_best: bool) -> None:
        cfg = self.config.training
        ckpt.atomic_save(self.state_dict(full=True), self.run_dir / CHECKPOINT_NAMES["last"])
        weights = self.state_dict(full=False)
        ckpt.atomic_save(weights, self.run_dir / f"checkpoint_step{self.step:08d}.pt")
        if is_best:
            ckpt.atomic_save(weights, self.run_dir / CHECKPOINT_NAMES["best"])
        for old in self.step_checkpoints()[:-cfg.keep_last_n]:
            old.unlink(missing_ok=True)

    def step_checkpoints(self) -> list[Path]:
        return sorted(self.run_dir.glob("checkpoint_step*.pt"))

    def write_metrics(self, record: dict) -> None:
        try:
            with open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")
        except OSError as exc:
            raise TransformerMTError(
                f"could not write {self.run_dir / 'metrics.jsonl'}: {exc.strerror or exc}; free disk space or make "
                f"the run directory writable, then resume (the last checkpoint is intact)") from None

    # --- the learning-rate schedule ----------------------------------------------------------------

    def wall_seconds(self) -> float:
        """Seconds of the training loop so far, all sessions, validation included: what max_minutes bounds."""
        return self.elapsed + self.clock() - self.session_start

    def schedule_progress(self) -> float | None:
        """With the minutes horizon, the share of the time budget spent training (None: the steps horizon).

        Time spent validating does not count: the progress is the training seconds so far over the
        budget less the seconds validated so far, so it reaches 1 exactly when the budget ends.
        """
        cfg = self.config.training
        if cfg.schedule_horizon != "minutes":
            return None
        training_budget = cfg.max_minutes * 60 - self.validation_seconds
        trained = self.wall_seconds() - self.validation_seconds
        return min(1.0, trained / training_budget) if training_budget > 0 else 1.0

    def set_learning_rate(self) -> float:
        """Set the learning rate of the next update (number ``self.step + 1``) and return it."""
        cfg = self.config.training
        lr = cfg.lr * learning_rate_factor(self.step + 1, cfg, self.config.model.d_model, self.schedule_progress())
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def describe_schedule(self) -> str:
        cfg = self.config.training
        text = f"{cfg.scheduler}, peak {cfg.lr:g} after {cfg.warmup_steps} warmup updates"
        if cfg.scheduler not in ("cosine", "linear"):
            return text
        if cfg.schedule_horizon == "minutes":
            return (f"{text}, decaying to {cfg.min_lr:g} over the {cfg.max_minutes:g}-minute budget "
                    f"(schedule_horizon: minutes; time spent validating does not count)")
        return f"{text}, decaying to {cfg.min_lr:g} at update {cfg.max_steps} (schedule_horizon: steps)"

    # --- one update ------------------------------------------------------------------------------

    def compute_loss(self, batch):
        """Summed label-smoothed loss and NLL of one batch."""
        real = batch.tgt_output != PAD_ID
        with autocast(self.device, self.precision):
            logits = self.train_model(batch.src_tokens, batch.tgt_input, real)
        return label_smoothed_nll_loss(logits, batch.tgt_output[real], self.config.training.label_smoothing, PAD_ID)

    def train_update(self, batches) -> dict | None:
        """One optimizer update over ``batches`` (gradient accumulation); None if skipped as non-finite."""
        cfg = self.config.training
        self.model.train()
        self.set_learning_rate()
        total_tokens = sum(b.num_tokens for b in batches)
        loss_sum = nll_sum = 0.0
        for batch in batches:
            batch = batch.to(self.device)
            loss, nll = self.compute_loss(batch)
            # Normalise by the tokens of the whole update so accumulation equals one big batch.
            self.scaler.scale(loss / total_tokens).backward()
            loss_sum += loss.item()
            nll_sum += nll.item()
        self.scaler.unscale_(self.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.clip_norm or float("inf"))
        if not (math.isfinite(loss_sum) and math.isfinite(grad_norm.item())):
            self.optimizer.zero_grad(set_to_none=True)
            if self.scaler.is_enabled():
                self.scaler.update()  # fp16: lowers the scale; overflow is routine, not an error
                return None
            self.nonfinite_in_row += 1
            self.nonfinite_total += 1
            log.warning("step %d: non-finite loss or gradient, update skipped (%d in a row)", self.step + 1,
                        self.nonfinite_in_row)
            self.write_metrics({"type": "nonfinite", "step": self.step + 1, "in_row": self.nonfinite_in_row,
                                "total": self.nonfinite_total})
            if self.nonfinite_in_row >= cfg.max_nonfinite_in_row:
                raise TransformerMTError(
                    f"{self.nonfinite_in_row} updates in a row had a non-finite loss or gradient; training "
                    f"diverged. Lower training.lr, raise training.warmup_steps, set training.clip_norm, or use "
                    f"fp32 precision, then resume")
            return None
        self.nonfinite_in_row = 0
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return {"loss": loss_sum / total_tokens, "nll": nll_sum / total_tokens, "tokens": total_tokens,
                "grad_norm": grad_norm.item()}

    # --- validation ------------------------------------------------------------------------------

    @torch.no_grad()
    def validation_loss(self) -> tuple[float, float]:
        self.model.eval()
        loss_sum = nll_sum = 0.0
        tokens = 0
        for indices in make_batches(self.valid_data, self.config.training.batch_tokens, 0, 0, shuffle=False):
            batch = collate(self.valid_data, indices).to(self.device)
            loss, nll = self.compute_loss(batch)
            loss_sum += loss.item()
            nll_sum += nll.item()
            tokens += batch.num_tokens
        return loss_sum / tokens, nll_sum / tokens

    def validate(self) -> dict:
        start = time.time()
        loss, nll = self.validation_loss()
        # Decoded in fp32 whatever the training precision: BLEU here picks the best checkpoint.
        translator = Translator(self.model, self.src_tok, self.tgt_tok, self.config, self.device, "fp32")
        dec = self.config.decoding
        hyps = translator.translate(self.valid_src, beam_size=dec.valid_beam_size)
        scores = score(hyps, self.valid_ref, resolve_tokenize(dec.sacrebleu_tokenize, self.config.data.tgt_lang))
        result = {"type": "valid", "step": self.step, "epoch": self.epoch + 1, "loss": loss, "nll": nll,
                  "ppl": math.exp(min(nll, 50)), "bleu": scores["bleu"], "chrf": scores["chrf"],
                  "seconds": time.time() - start}
        self.model.train()
        return result

    def validate_and_save(self) -> bool:
        """Validate, log, save checkpoints; return True when early stopping says stop.

        The time this takes is added to ``validation_seconds`` (it does not advance the schedule).
        """
        start = self.clock()
        result = self.validate()
        is_best = result["bleu"] > self.best_bleu
        if is_best:
            self.best_bleu = result["bleu"]
            self.validations_without_improvement = 0
        else:
            self.validations_without_improvement += 1
        result["best_bleu"] = self.best_bleu
        self.write_metrics(result)
        log.info("validation at step %d: loss %.3f, ppl %.2f, BLEU %.2f, chrF %.2f (best %.2f)%s [%.1fs]",
                 self.step, result["loss"], result["ppl"], result["bleu"], result["chrf"], self.best_bleu,
                 " *" if is_best else "", result["seconds"])
        self.validation_seconds += self.clock() - start
        self.save_checkpoints(is_best)
        patience = self.config.training.patience
        return bool(patience) and self.validations_without_improvement >= patience

    # --- the loop --------------------------------------------------------------------------------

    def budget_spent(self) -> str | None:
        cfg = self.config.training
        if cfg.max_steps and self.step >= cfg.max_steps:
            return f"reached training.max_steps={cfg.max_steps}"
        if cfg.max_epochs and self.epoch >= cfg.max_epochs:
            return f"reached training.max_epochs={cfg.max_epochs}"
        if cfg.max_minutes and self.wall_seconds() >= cfg.max_minutes * 60:
            return f"reached training.max_minutes={cfg.max_minutes}"
        return None

    def _handle_signal(self, signum, frame) -> None:
        if self.stop_signal is not None:
            raise KeyboardInterrupt  # a second Ctrl-C stops at once
        self.stop_signal = signal.Signals(signum).name
        log.warning("%s received: finishing the current update, then saving a checkpoint", self.stop_signal)

    def run(self) -> dict:
        cfg = self.config.training
        if self.lock.handle is None:
            raise TransformerMTError(f"this Trainer of {self.run_dir} has ended (its lock is released); create a "
                                     f"new one to train on")
        previous_handlers = {}
        progress = None
        try:
            for sig in (signal.SIGINT, signal.SIGTERM):
                try:
                    previous_handlers[sig] = signal.signal(sig, self._handle_signal)
                except ValueError:
                    pass  # not the main thread: signals stay with the caller
            self.session_start = self.clock()
            stop_reason = self.budget_spent()
            progress = tqdm(total=cfg.max_steps or None, initial=self.step, unit="step", dynamic_ncols=True,
                            disable=(not self.show_progress) if self.show_progress is not None else None,
                            mininterval=1.0)
            window_tokens, window_loss, window_start = 0, 0.0, time.time()
            while stop_reason is None:
                batches = make_batches(self.train_data, cfg.batch_tokens, cfg.seed, self.epoch)
                while self.batches_done < len(batches) and stop_reason is None:
                    group = batches[self.batches_done:self.batches_done + cfg.accumulate]
                    self.batches_done += len(group)
                    stats = self.train_update([collate(self.train_data, idx) for idx in group])
                    if stats is None:
                        continue
                    window_tokens += stats["tokens"]
                    window_loss += stats["loss"] * stats["tokens"]
                    progress.update(1)
                    if self.step % cfg.log_every == 0:
                        seconds = time.time() - window_start
                        record = {"type": "train", "step": self.step, "epoch": self.epoch + 1,
                                  "loss": window_loss / window_tokens, "lr": self.optimizer.param_groups[0]["lr"],
                                  "tokens_per_s": window_tokens / max(seconds, 1e-9),
                                  "grad_norm": stats["grad_norm"]}
                        self.write_metrics(record)
                        progress.set_postfix(loss=f"{record['loss']:.3f}", lr=f"{record['lr']:.2e}",
                                             tok_s=f"{record['tokens_per_s']:.0f}")
                        log.debug("step %d loss %.4f", self.step, record["loss"])
                        window_tokens, window_loss, window_start = 0, 0.0, time.time()
                    stop_reason = self.budget_spent()
                    if self.stop_signal:
                        stop_reason = f"{self.stop_signal} received"
                    if stop_reason is None and self.step % cfg.validate_every == 0:
                        validation_start = time.time()
                        if self.validate_and_save():
                            stop_reason = (f"early stopping: no BLEU improvement in {cfg.patience} validations")
                        window_start += time.time() - validation_start  # tokens/s excludes validation time
                if self.batches_done >= len(batches):
                    self.epoch += 1
                    self.batches_done = 0
                    log.info("epoch %d done at step %d", self.epoch, self.step)
                    if stop_reason is None:
                        stop_reason = self.budget_spent()
            progress.close()
            self.elapsed = self.wall_seconds()
            self.session_start = self.clock()
            if self.stop_signal:
                self.save_checkpoints(is_best=False)
                raise TrainingInterrupted(
                    f"training stopped by {self.stop_signal} at step {self.step}; checkpoint saved in "
                    f"{self.run_dir}. Resume with: transformer-mt train --config <same config> "
                    f"--output-dir {self.run_dir} --resume")
            log.info("training stopped: %s", stop_reason)
            if not self.step_checkpoints() or not self.step_checkpoints()[-1].name.endswith(f"{self.step:08d}.pt"):
                self.validate_and_save()
            if cfg.average_last_n:
                self.average()
        finally:
            if progress is not None:
                progress.close()
            for sig, handler in previous_handlers.items():
                signal.signal(sig, handler)
            self.close()
        return {"run_dir": str(self.run_dir), "step": self.step, "epoch": self.epoch, "best_bleu": self.best_bleu,
                "train_seconds": self.elapsed, "stop_reason": stop_reason}

    def close(self) -> None:
        """Stop writing train.log and release the run directory's lock (run() does this when it ends)."""
        if self.log_handler is not None:
            log.removeHandler(self.log_handler)
            self.log_handler.close()
            self.log_handler = None
        self.lock.release()

    def average(self) -> Path | None:
        paths = self.step_checkpoints()[-self.config.training.average_last_n:]
        if len(paths) < 2:
            log.info("only %d step checkpoint(s); nothing to average", len(paths))
            return None
        out = self.run_dir / CHECKPOINT_NAMES["average"]
        ckpt.average_checkpoints(paths, out)
        log.info("averaged %d checkpoints (%s .. %s) into %s", len(paths), paths[0].name, paths[-1].name, out)
        return out


def train(config: Config, output_dir, device: str | None = None, resume: bool = False, overwrite: bool = False,
          show_progress: bool | None = None) -> dict:
    """Train a model as configured and return a summary (run_dir, step, best_bleu, train_seconds, ...)."""
    return Trainer(config, output_dir, device, resume, overwrite, show_progress).run()
