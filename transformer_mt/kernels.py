"""CPU performance kernels, kept out of model.py so that the model reads as the paper.

- ``OneDNNLinear``: an ``nn.Linear`` whose float32 CPU matmuls (forward and backward) run on oneDNN
  instead of MKL, which on AMD CPUs takes a path without AVX-512.
- ``FastDropout``: an ``nn.Dropout`` whose CPU mask comes from random integers instead of one
  Bernoulli draw per element.

Both compute what the plain PyTorch layers compute (tests/test_kernels.py compares them). The
switch: ``TRANSFORMER_MT_KERNELS=0`` in the environment (read at import), or
``transformer_mt.kernels.ENABLED = False``, makes both take the plain path (``F.linear``,
``F.dropout``), e.g. to rule them out when something looks wrong.
"""

from __future__ import annotations

import math
import os

import torch
import torch.nn.functional as F
from torch import nn

ENABLED = os.environ.get("TRANSFORMER_MT_KERNELS", "1") != "0"


def dropout_mask(shape, p: float, like: torch.Tensor) -> torch.Tensor:
    """Inverted-dropout mask: 0 with probability ~p, else 1/(1-p), in ``like``'s dtype and device.

    On CPU, torch's own dropout draws one Bernoulli sample per element, which took 16% of a
    training update here (2 cores). Random integers are cheaper per bit: one 31-bit draw gives two
    15-bit uniform numbers, kept where >= round(p * 2^15). p is thus rounded to a multiple of
    2^-15 (0.1 -> 0.100006) and the scale uses the rounded value, so the mask's mean stays 1.
    """
    numel = math.prod(shape)
    threshold = round(p * 32768)
    # random_() on int32 draws uniformly from [0, 2^31): both 16-bit halves are uniform once the
    # sign bit of the upper half is masked off.
    bits = torch.empty((numel + 1) // 2, dtype=torch.int32, device=like.device).random_()
    halves = bits.view(torch.int16)[:numel].bitwise_and_(0x7FFF).view(shape)
    return (halves >= threshold).to(like.dtype).mul_(32768 / (32768 - threshold))


class FastDropout(nn.Module):
    """``nn.Dropout`` with a faster mask on CPU (see ``dropout_mask``); torch's fused kernel elsewhere."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if not ENABLED or x.device.type != "cpu":
            return F.dropout(x, self.p, training=True)
        return x * dropout_mask(x.shape, self.p, x)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def onednn_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x @ weight^T + bias by oneDNN (``weight`` is (out, in), as in nn.Linear)."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


def _onednn_linear_works() -> bool:
    # The op is private to PyTorch (torch.compile's CPU backend uses it): check it exists and
    # computes a linear layer in this build, else OneDNNLinear falls back to F.linear.
    try:
        x, weight, bias = torch.ones(2, 3), torch.ones(4, 3), torch.ones(4)
        with torch.no_grad():
            return torch.backends.mkldnn.is_available() and torch.equal(onednn_linear(x, weight, bias),
                                                                        F.linear(x, weight, bias))
    except (AttributeError, RuntimeError):
        return False


ONEDNN_LINEAR = _onednn_linear_works()


class OneDNNLinearFunction(torch.autograd.Function):
    """y = x W^T + b with oneDNN matmuls in the forward and the backward pass."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return onednn_linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad_y):
        x, weight = ctx.saved_tensors
        grad_rows = grad_y.reshape(-1, grad_y.size(-1))
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_x = onednn_linear(grad_y, weight.t())  # dL/dx = dL/dy W
        if ctx.needs_input_grad[1]:
            # dL/dW = (dL/dy)^T x, computed as (x^T dL/dy)^T: the fastest orientation measured here.
            grad_weight = onednn_linear(x.reshape(-1, x.size(-1)).t(), grad_rows.t()).t()
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad_rows.sum(0)
        return grad_x, grad_weight, grad_bias


class OneDNNLinear(nn.Linear):
    """``nn.Linear`` that multiplies with oneDNN on CPU in float32.

    PyTorch sends float32 matmuls on CPU to MKL, which on AMD CPUs takes a path without AVX-512:
    on this project's 2-core Zen 5 machine MKL ran the model's shapes at ~210 GFLOP/s and oneDNN
    at ~450; beam-5 decoding became ~1.6x faster, a linear layer's forward + backward ~1.7x.
    Same float32 arithmetic (errors of MKL's order). bf16 autocast already runs on oneDNN, and
    under torch.compile inductor picks its own kernels, so both keep ``F.linear``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (ENABLED and ONEDNN_LINEAR and x.device.type == "cpu" and x.dtype == torch.float32
                and not torch.is_autocast_enabled("cpu") and not torch.compiler.is_compiling()):
            if torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad):
                return OneDNNLinearFunction.apply(x, self.weight, self.bias)
            return onednn_linear(x, self.weight, self.bias)
        return F.linear(x, self.weight, self.bias)
