"""Validation of a run's model on its validation set: the loss, and BLEU and chrF of its translations.

Three views of the weights are validated the same way: the weights being trained, their moving average
(training.ema_decay: what checkpoints hold), and the average of the last step checkpoints
(training.average_last_n, once when training ends). The Trainer decides when to validate and what the
result means for early stopping; the records and log lines of a validation are written here.

A multilingual run (several directions) is validated on each direction's own set: the record's loss, ppl,
BLEU and chrF are the means over the directions (the mean BLEU picks the best checkpoint) and its
"directions" field holds each one's, e.g. ``{"de-en": {"loss": ..., "bleu": ...}, ...}``.
"""

from __future__ import annotations

import logging
import math
import time
from contextlib import nullcontext

import torch

from ..config import Config
from ..data.batches import collate, make_batches
from ..decoding.translator import Translator
from ..scoring import resolve_tokenize, score
from .ema import ExponentialMovingAverage
from .metrics import MetricsWriter
from .run_data import RunData, ValidationSet

log = logging.getLogger("transformer_mt")

VALIDATION_EXAMPLES = 3  # validation translations shown in TensorBoard's text tab at each validation


class Validator:
    """Validates ``model`` on ``data``'s validation set. ``compute_loss(batch, model)``: the summed loss and NLL
    of a batch (the Trainer's, so that validation and training count the same); the loss is computed with
    ``compiled_model``, the translations with ``model`` itself, in fp32 whatever the training precision."""

    def __init__(self, model: torch.nn.Module, compiled_model, data: RunData, config: Config, device: torch.device,
                 compute_loss):
        self.model, self.compiled_model, self.data = model, compiled_model, data
        self.config, self.device, self.compute_loss = config, device, compute_loss
        self.examples: list[tuple[str, str, str]] = []  # (source, output, reference) of the last validation

    def loss(self) -> tuple[float, float]:
        """Validation loss and NLL per target token (several directions: their means)."""
        losses = [self.set_loss(valid_set) for valid_set in self.data.valid_sets]
        return sum(loss for loss, _ in losses) / len(losses), sum(nll for _, nll in losses) / len(losses)

    @torch.no_grad()
    def set_loss(self, valid_set: ValidationSet) -> tuple[float, float]:
        """Loss and NLL per target token of one direction's validation set."""
        self.model.eval()
        loss_sum = nll_sum = 0.0
        tokens = 0
        valid = valid_set.data
        for indices in make_batches(valid, self.config.training.batch_tokens, 0, 0, shuffle=False):
            batch = collate(valid, indices, self.config.model.source_eos, valid_set.prefix_ids).to(self.device)
            loss, nll = self.compute_loss(batch, self.compiled_model)
            loss_sum += loss.item()
            nll_sum += nll.item()
            tokens += batch.num_tokens
        return loss_sum / tokens, nll_sum / tokens

    def validate(self, step: int, epoch: int, ema: ExponentialMovingAverage | None = None) -> dict:
        """Validation loss and BLEU (a "valid" record of ``step`` and ``epoch``, counted from 0), of the moving
        average of the weights when ``ema`` is given."""
        with ema.applied() if ema is not None else nullcontext():
            return self._validate(step, epoch)

    def validate_weights(self, weights: dict, step: int, epoch: int) -> dict:
        """Validate other weights of the model (the averaged checkpoint's) as the model's own are validated; the
        model keeps its own weights."""
        kept = {name: value.detach().clone() for name, value in self.model.state_dict().items()}
        self.model.load_state_dict(weights)
        try:
            return self._validate(step, epoch)
        finally:
            self.model.load_state_dict(kept)

    def _validate(self, step: int, epoch: int) -> dict:
        start = time.time()
        data, dec = self.data, self.config.decoding
        # Decoded in fp32 whatever the training precision: BLEU here picks the best checkpoint.
        translator = Translator(self.model, data.src_tok, data.tgt_tok, self.config, self.device, "fp32")
        per_direction = {}
        self.examples = []
        for valid_set in data.valid_sets:
            loss, nll = self.set_loss(valid_set)
            hyps = translator.translate(valid_set.sources, beam_size=dec.valid_beam_size,
                                        target_language=valid_set.target_language)
            scores = score(hyps, valid_set.references, resolve_tokenize(dec.sacrebleu_tokenize,
                                                                        valid_set.direction[1]))
            per_direction[valid_set.name] = {"loss": loss, "nll": nll, "ppl": math.exp(min(nll, 50)),
                                             "bleu": scores["bleu"], "chrf": scores["chrf"]}
            shown = VALIDATION_EXAMPLES if len(data.valid_sets) == 1 else 1
            self.examples += [(src if len(data.valid_sets) == 1 else f"({valid_set.name}) {src}", hyp, ref)
                              for src, hyp, ref in zip(valid_set.sources, hyps, valid_set.references)][:shown]
        mean = {key: sum(values[key] for values in per_direction.values()) / len(per_direction)
                for key in ("loss", "nll", "bleu", "chrf")}
        result = {"type": "valid", "step": step, "epoch": epoch + 1, "loss": mean["loss"], "nll": mean["nll"],
                  "ppl": math.exp(min(mean["nll"], 50)), "bleu": mean["bleu"], "chrf": mean["chrf"],
                  "seconds": time.time() - start}
        if len(per_direction) > 1:
            result["directions"] = per_direction
        self.model.train()
        return result


def report_validation(result: dict, is_best: bool, examples: list, metrics: MetricsWriter | None) -> None:
    """Write a validation's record (and its first translations, for TensorBoard) and its line in the log."""
    if metrics is not None:  # rank 0 alone writes
        metrics.write(result)
        metrics.add_text("valid/translations", "\n\n".join(
            f"**source** {src}  \n**output** {hyp}  \n**reference** {ref}" for src, hyp, ref in examples),
            result["step"])
    log.info("validation at step %d: loss %.3f, ppl %.2f, BLEU %.2f, chrF %.2f (best %.2f)%s [%.1fs]%s",
             result["step"], result["loss"], result["ppl"], result["bleu"], result["chrf"], result["best_bleu"],
             " *" if is_best else "", result["seconds"], directions_text(result))


def directions_text(result: dict) -> str:
    """The per-direction part of a validation's log line ("; mean of de-en loss 2.10 BLEU 30.12, ..."), or ""."""
    directions = result.get("directions")
    if not directions:
        return ""
    return "; mean of " + ", ".join(f"{name} loss {values['loss']:.3f} BLEU {values['bleu']:.2f}"
                                    for name, values in directions.items())


def report_average(result: dict) -> None:
    """Say in the log whether to decode with the averaged checkpoint (its validation ``result``) or the best one.

    The last N checkpoints are a good average when they all come from the annealed end of training;
    a time budget on a slow machine fits fewer updates, so the same N reaches back to the early,
    high-learning-rate ones (Multi30k recipe, 35 minutes on one core, ~1,650 updates: the average of
    steps 500-1,656 scored 31.7 test BLEU against the best checkpoint's 35.2).
    """
    better = result["bleu"] > result["best_bleu"]
    log.info("validation of the average: BLEU %.2f, chrF %.2f, %s the best checkpoint's %.2f: decode with "
             "--checkpoint %s%s", result["bleu"], result["chrf"], "above" if better else "not above",
             result["best_bleu"], "average" if better else "best (the default)", directions_text(result))
