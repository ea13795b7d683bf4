"""Label-smoothed cross-entropy (Szegedy et al. 2016; section 5.4 of Vaswani et al.).

The target distribution puts (1 - eps) on the reference token and spreads eps
uniformly over the whole vocabulary, i.e. q(k) = (1 - eps) [k = y] + eps / V.
The loss is -sum_k q(k) log p(k), summed over real (non-padding) positions:
exactly torch's ``cross_entropy(..., label_smoothing=eps)``, whose fused
backward pass is the fastest way to compute it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def label_smoothed_nll_loss(logits: torch.Tensor, target: torch.Tensor, epsilon: float, pad_id: int):
    """Return (smoothed loss, plain negative log-likelihood), both summed over non-pad tokens.

    logits: (..., V); target: (...). The NLL (for perplexity) is computed without gradient.
    """
    logits = logits.reshape(-1, logits.size(-1)).float()
    target = target.reshape(-1)
    loss = F.cross_entropy(logits, target, ignore_index=pad_id, label_smoothing=epsilon, reduction="sum")
    with torch.no_grad():
        real = target != pad_id
        target_logit = logits.gather(1, target.unsqueeze(1)).squeeze(1)
        nll = ((torch.logsumexp(logits, dim=-1) - target_logit) * real).sum()
    return loss, nll
