"""Label-smoothed cross-entropy (Szegedy et al. 2016; section 5.4 of Vaswani et al.).

The target distribution puts (1 - eps) on the reference token and spreads eps
uniformly over the whole vocabulary, i.e. q(k) = (1 - eps) [k = y] + eps / V.
The loss is -sum_k q(k) log p(k) = (1 - eps) * nll + eps * mean_k(-log p(k)),
summed over real (non-padding) positions. It equals torch's
``cross_entropy(..., label_smoothing=eps)``; computing it from one
log-softmax also yields the plain NLL (for perplexity) at no extra cost.
"""

from __future__ import annotations

import torch


def label_smoothed_nll_loss(logits: torch.Tensor, target: torch.Tensor, epsilon: float, pad_id: int):
    """Return (smoothed loss, plain negative log-likelihood), both summed over non-pad tokens.

    logits: (..., V); target: (...).
    """
    lprobs = torch.log_softmax(logits.reshape(-1, logits.size(-1)).float(), dim=-1)
    target = target.reshape(-1)
    keep = target != pad_id
    nll = -lprobs.gather(1, target.unsqueeze(1)).squeeze(1)
    smooth = -lprobs.mean(dim=-1)
    nll = nll.masked_fill(~keep, 0.0).sum()
    smooth = smooth.masked_fill(~keep, 0.0).sum()
    loss = (1.0 - epsilon) * nll + epsilon * smooth
    return loss, nll.detach()
