"""Label-smoothed cross-entropy (Szegedy et al. 2016; section 5.4 of Vaswani et al.).

The target distribution puts (1 - eps) on the reference token and spreads eps
uniformly over the whole vocabulary, i.e. q(k) = (1 - eps) [k = y] + eps / V.
The loss is -sum_k q(k) log p(k) = (1 - eps) NLL + eps * mean_k(-log p(k)), summed over
real (non-padding) positions: the same as torch's ``cross_entropy(..., label_smoothing=eps)``.
Computing it from one softmax also yields the plain NLL (for perplexity) for free; a
second pass over the (tokens x vocabulary) logits for it cost ~6% of a CPU training update.

An update whose loss or gradient is not finite is skipped, and too many in a row stop the run
(NonFiniteUpdates).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
import torch.nn.functional as F

from ..errors import TransformerMTError

log = logging.getLogger("transformer_mt")


class _LabelSmoothedNLL(torch.autograd.Function):
    """Summed smoothed loss and NLL from one softmax, with the gradient written in one tensor.

    d loss / d logits = softmax(logits) - q at real positions (0 at padding). Forward keeps the
    probabilities p and backward turns them into that gradient in place: autograd through
    log_softmax + gather + sum would materialise more (tokens x vocabulary) tensors, and keeping
    log-probabilities instead would need an exp over all of them again (~4% of a CPU update).

    The log-probabilities the loss needs come from p without a log over the vocabulary:
    log p_k = z_k - lse with lse = logsumexp(z), and lse = z_m - log p_m at the most probable
    token m, whose p_m >= 1/V never underflows. Then NLL = lse - z_y and
    sum_k log p_k = sum_k z_k - V lse.
    """

    @staticmethod
    def forward(ctx, logits, target, epsilon: float, pad_id: int):
        # Half-precision logits (autocast) get an fp32 softmax; fp32/fp64 keep theirs.
        dtype = torch.float32 if logits.element_size() < 4 else logits.dtype
        probs = F.softmax(logits, dim=-1, dtype=dtype)
        # softmax is monotonic, so the largest logit and the largest probability are token m's
        # (amax: values only, several times cheaper than max with indices).
        lse = logits.amax(dim=-1).to(dtype) - probs.amax(dim=-1).log()
        nll = lse - logits.gather(1, target.unsqueeze(1)).squeeze(1).to(dtype)
        if epsilon > 0.0:
            mean_lprob = logits.sum(dim=-1, dtype=dtype) / logits.size(-1) - lse
            per_token = (1.0 - epsilon) * nll - epsilon * mean_lprob
        else:
            per_token = nll
        real = target != pad_id
        ctx.save_for_backward(probs, target, real)
        ctx.epsilon, ctx.input_dtype = epsilon, logits.dtype
        return per_token[real].sum(), nll[real].sum()

    @staticmethod
    def backward(ctx, grad_loss, grad_nll):
        probs, target, real = ctx.saved_tensors
        epsilon = ctx.epsilon
        grad = probs  # used once: overwritten in place with softmax - q
        if epsilon > 0.0:
            grad.sub_(epsilon / grad.size(-1))
        grad.scatter_add_(1, target.unsqueeze(1),
                          torch.full((grad.size(0), 1), -(1.0 - epsilon), dtype=grad.dtype, device=grad.device))
        grad.mul_((grad_loss * real).unsqueeze(1).to(grad.dtype))
        return grad.to(ctx.input_dtype), None, None, None


def label_smoothed_nll_loss(logits: torch.Tensor, target: torch.Tensor, epsilon: float, pad_id: int):
    """Return (smoothed loss, plain negative log-likelihood), both summed over non-pad tokens.

    logits: (..., V); target: (...). The NLL (for perplexity) carries no gradient.
    """
    loss, nll = _LabelSmoothedNLL.apply(logits.reshape(-1, logits.size(-1)), target.reshape(-1), epsilon, pad_id)
    return loss, nll.detach()


class NonFiniteUpdates:
    """Updates skipped because their loss or gradient was not finite: counted in a row and in all (``total``,
    which checkpoints keep), each logged and written as a "nonfinite" record (``write``), and the run
    stopped when ``max_in_row`` come in a row (training.max_nonfinite_in_row): it diverged."""

    def __init__(self, max_in_row: int, write: Callable[[dict], None]):
        self.max_in_row, self.write = max_in_row, write
        self.in_row = 0
        self.total = 0

    def skipped(self, step: int) -> None:
        """Count the skipped update that would have been number ``step``."""
        self.in_row += 1
        self.total += 1
        log.warning("step %d: non-finite loss or gradient, update skipped (%d in a row)", step, self.in_row)
        self.write({"type": "nonfinite", "step": step, "in_row": self.in_row, "total": self.total})
        if self.in_row >= self.max_in_row:
            raise TransformerMTError(
                f"{self.in_row} updates in a row had a non-finite loss or gradient; training "
                f"diverged. Lower training.lr, raise training.warmup_steps, set training.clip_norm, or use "
                f"fp32 precision, then resume")

    def finite(self) -> None:
        """An update went through: the next skipped one is the first in a row."""
        self.in_row = 0
