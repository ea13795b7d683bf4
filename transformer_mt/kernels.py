"""CPU performance kernels, kept out of model.py so that the model reads as the paper.

- ``OneDNNLinear``: an ``nn.Linear`` whose float32 CPU matmuls (forward and backward) run on oneDNN
  instead of MKL on AMD CPUs with AVX-512, where MKL takes a path without it (on other CPUs it is ``F.linear``).
- ``FastDropout``: an ``nn.Dropout`` whose CPU mask comes from random integers instead of one
  Bernoulli draw per element.
- ``Int8Linear`` and ``quantize_linear_layers``: linear layers that multiply large products in int8 for
  decoding on CPU (``translate --quantize``): fbgemm's layer while PyTorch has it, else (and on AMX-INT8
  CPUs) oneDNN's.
- ``StepKeysValues`` and ``attention_over_steps``: the decoder's self-attention keys and values of the
  positions decoded so far (incremental decoding), stored so that a step appends without copying them
  and beam search's reordering copies them once, and the attention of the newest position over them.

They compute what the plain PyTorch layers compute (tests/test_kernels.py compares them). The
switch: ``TRANSFORMER_MT_KERNELS=0`` in the environment (read at import), or
``transformer_mt.kernels.ENABLED = False``, makes them take the plain path (``F.linear``,
``F.dropout``, ``scaled_dot_product_attention``; ``Int8Linear`` the same int8 numbers multiplied in
float32), e.g. to rule them out when something looks wrong.
"""

from __future__ import annotations

import math
import os
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from .device import cpu_flags, cpu_info

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
        # Under torch.compile the compiler fuses dropout's random draw into the kernels around it
        # (and cannot trace the in-place bit tricks of dropout_mask without breaking the graph).
        if not ENABLED or x.device.type != "cpu" or torch.compiler.is_compiling():
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


# oneDNN where it beats PyTorch's own choice (MKL on x86): on AMD CPUs with AVX-512 (Zen 4, Zen 5), which MKL
# serves with a code path without AVX-512. Elsewhere MKL was the faster and the leaner. Intel: Multi30k recipe
# on one thread of a Xeon family 6 model 106, 150 updates: MKL 1.04 GB peak memory against oneDNN's 2.80 GB
# (the primitives oneDNN builds for each new matrix shape keep their buffers), and faster. AMD with AVX2 only:
# on an EPYC family 25 model 1 (Zen 3) MKL trained 1.23x faster and decoded beam 5 1.05x (manual: docs/performance/index.md).
ONEDNN_LINEAR_WORKS = _onednn_linear_works()
ONEDNN_LINEAR = ONEDNN_LINEAR_WORKS and cpu_info("vendor_id") == "AuthenticAMD" and "avx512f" in cpu_flags()


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

    PyTorch sends float32 matmuls on CPU to MKL, which on AMD CPUs takes a path without AVX-512 (only
    AMD CPUs that have AVX-512 use this layer's oneDNN path, see ``ONEDNN_LINEAR``):
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


def _int8_linear_works() -> bool:
    # Private to PyTorch too (torch.compile's x86 int8 path uses them): check that they exist and compute
    # an int8 product in this build, else Int8Linear multiplies its int8 numbers with F.linear.
    try:
        weight = torch.ones(4, 3, dtype=torch.int8)
        packed = torch.ops.onednn.qlinear_prepack(weight, None)
        y = torch.ops.onednn.qlinear_pointwise(torch.full((2, 3), 3, dtype=torch.uint8), 0.5, 1, packed,
                                               torch.ones(4), torch.zeros(4, dtype=torch.long), None, 1.0, 0,
                                               torch.float32, "none", [], "")
        return torch.equal(y, torch.full((2, 4), 3.0))  # (3 - 1) * 0.5 per input, times 1, three inputs
    except (AttributeError, RuntimeError):
        return False


INT8_LINEAR_WORKS = _int8_linear_works()
# Without VNNI (or AMX), x86 multiplies uint8 by int8 with an instruction that adds pairs of products in
# int16 and saturates: 255 * 127 * 2 overflows it, 127 * 127 * 2 does not. So inputs get 7 bits there, as
# fbgemm's reduce_range gives them (with 8 bits oneDNN's products were off by up to 0.5 on an AVX2 Zen 3).
INT8_INPUT_LEVELS = 255 if {"avx512_vnni", "avx_vnni", "amx_int8"} & cpu_flags() else 127


def fbgemm_linear(linear: nn.Linear) -> nn.Module | None:
    """PyTorch's own dynamic int8 linear layer (fbgemm) for ``linear``; None where this PyTorch no longer has it
    (2.13 marks ``torch.ao.quantization`` deprecated and due for removal)."""
    with warnings.catch_warnings():  # its deprecation notices are for this code, not for someone translating
        warnings.simplefilter("ignore")
        try:
            from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear
            from torch.ao.quantization import default_dynamic_qconfig
        except ImportError:
            return None
        plain = nn.Linear(linear.in_features, linear.out_features, bias=linear.bias is not None)
        plain.load_state_dict(linear.state_dict())  # from_float wants exactly nn.Linear (not OneDNNLinear)
        plain.qconfig = default_dynamic_qconfig  # what quantize_dynamic uses for int8
        return DynamicLinear.from_float(plain)


# Which int8 product Int8Linear uses for large inputs. fbgemm's (PyTorch's dynamic quantization) costs less per
# call than oneDNN's with its input quantized in Python: on an AVX2 Zen 3, beam 5 / greedy with batches of 64
# decoded ~1.1-1.4x faster with it. oneDNN where fbgemm has no kernels for the CPU's int8 units (AMX-INT8)
# and once PyTorch has removed fbgemm's layer.
INT8_BACKEND = "onednn" if "amx_int8" in cpu_flags() else "fbgemm"


# oneDNN builds (and caches) a kernel for each number of rows it meets, and beam search meets every number as
# sentences finish: rows padded to a multiple of this, so that it meets fewer.
INT8_ROW_MULTIPLE = 8


def quantize_input(x: torch.Tensor, levels: int) -> tuple[torch.Tensor, float, float] | None:
    """(q, scale, offset) with x ~ q[:rows] * scale + offset, q uint8 in [0, levels] (its rows padded with zeros
    to a multiple of ``INT8_ROW_MULTIPLE``): one scale for the whole of ``x`` (rows, columns), from its minimum
    (the offset) and maximum. None if ``x`` is empty or holds an infinity or NaN (nothing to scale by).

    An offset rather than a zero point: oneDNN's int8 product with a zero point other than 0 corrects for it
    at every call (a 64x256 by 256x8000 product took 2.26 ms with zero point 64, 1.90 with 0; AVX2 Zen 3),
    whereas the offset's share of the product is offset * (the sum of each output's weights), added to the
    bias (``Int8Linear``). It is 0 for inputs that are never negative (after a ReLU).
    """
    if x.numel() == 0:
        return None
    lowest, highest = (value.item() for value in torch.aminmax(x))
    if not (math.isfinite(lowest) and math.isfinite(highest)):
        return None
    scale = (highest - lowest) / levels or 1.0
    # (x - lowest) / scale + 0.5 lies in [0.5, levels + 0.5] (up to float rounding of ~1e-4), so the
    # conversion's truncation rounds to the nearest of 0 .. levels. Through int16 because PyTorch converts
    # float32 to uint8 without vector instructions: 31 us for 320x256 floats against 8 + 6 this way (AVX2
    # Zen 3), at each of a decoding step's ~20 linear layers.
    inverse = 1.0 / scale
    rows = x.size(0)
    q = torch.empty((-(-rows // INT8_ROW_MULTIPLE) * INT8_ROW_MULTIPLE, x.size(1)), dtype=torch.uint8)
    q[rows:] = 0
    q[:rows] = x.mul(inverse).add_(0.5 - lowest * inverse).to(torch.int16)
    return q, scale, lowest


# Below about this many multiply-adds an int8 product does not repay its fixed costs (quantizing the input,
# oneDNN's call): on an AVX2 Zen 3 (1 thread) float32 was faster up to ~8-13 million for the model's
# d_model-256 layers (e.g. 201 against 247 us for 128 rows of 256x256), int8 from ~3 million for its
# 256x8000 output layer. Batch-1 decoding thus stays in float32 except the output layer.
INT8_MIN_MULTIPLY_ADDS = 10_000_000


class Int8Linear(nn.Module):
    """A linear layer for decoding on CPU whose large products are int8 (``translate --quantize``).

    Inputs large enough (``INT8_MIN_MULTIPLY_ADDS``) are multiplied in int8, dynamic quantization: weights
    int8 with one scale per output row, each input quantized as it comes. By ``INT8_BACKEND``: fbgemm's
    layer (PyTorch's ``quantize_dynamic``, while PyTorch has it), or oneDNN (``quantize_input``, then
    int32 sums returned as float32 with the bias added, on AMX-INT8 or VNNI where the CPU has them).
    Smaller inputs (batch-1 decoding) are multiplied in float32 by the original weights. PyTorch 2.13 marks
    ``torch.ao.quantization`` deprecated and due for removal, and its successor (torchao's ``quantize_``)
    computes int8 products on CPU fast only under torch.compile: its ``Int8DynamicActivationInt8WeightConfig``
    took 716 ms for a 320x256 by 256x8000 product that oneDNN takes in ~6 (AVX2 Zen 3, 2 threads), hence
    the oneDNN path. With the kernels off (or no oneDNN int8 in this PyTorch build), the oneDNN path's int8
    numbers are multiplied in float32 by ``F.linear``: the reference the test compares with.
    """

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight, self.bias = linear.weight, linear.bias  # the same parameters (a tied weight stays tied)
        weight = linear.weight.detach().float()
        scale = weight.abs().amax(dim=1).clamp(min=torch.finfo(torch.float32).tiny) / 127
        self.register_buffer("weight_int8", torch.round(weight / scale[:, None]).clamp(-127, 127).to(torch.int8))
        self.register_buffer("weight_scale", scale)
        # the int8 weights' sum for each output: an input's offset times it is the offset's share of the product
        self.register_buffer("weight_sums", (self.weight_int8.double() * scale.double()[:, None]).sum(1).float())
        self.input_levels = INT8_INPUT_LEVELS
        self.fbgemm = fbgemm_linear(linear) if INT8_BACKEND == "fbgemm" else None
        use_onednn = self.fbgemm is None and INT8_LINEAR_WORKS
        self.packed = torch.ops.onednn.qlinear_prepack(self.weight_int8, None) if use_onednn else None
        self.weight_zero_points = torch.zeros(self.out_features, dtype=torch.long)  # symmetric: all 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features)
        if rows.size(0) * self.in_features * self.out_features < INT8_MIN_MULTIPLY_ADDS or rows.numel() == 0:
            return F.linear(x, self.weight, self.bias)
        if ENABLED and self.fbgemm is not None:
            return self.fbgemm(x)
        quantized = quantize_input(rows, self.input_levels)
        if quantized is None:  # an infinity or NaN in it (which stays in its row, as in nn.Linear)
            y = F.linear(rows, self.weight, self.bias)
        else:
            q, scale, offset = quantized
            bias = self.weight_sums * offset if offset else None
            if self.bias is not None:
                bias = self.bias if bias is None else bias.add_(self.bias)
            if ENABLED and self.packed is not None:
                y = torch.ops.onednn.qlinear_pointwise(q, scale, 0, self.packed, self.weight_scale,
                                                       self.weight_zero_points, bias, 1.0, 0, torch.float32,
                                                       "none", [], "")[:rows.size(0)]
            else:
                y = F.linear(q[:rows.size(0)].float() * scale, self.weight_int8.float() * self.weight_scale[:, None],
                             bias)
        return y.view(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


def quantize_linear_layers(model: nn.Module) -> nn.Module:
    """Replace every ``nn.Linear`` of ``model`` (for decoding on CPU) by an ``Int8Linear``; returns ``model``."""
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.Linear):
                setattr(module, name, Int8Linear(child))
    return model


class StepKeysValues:
    """One decoder layer's self-attention keys and values of the positions decoded so far.

    Stored time-major, (capacity, rows, heads, head_dim), with room for later steps. Appending a step
    writes one slice, where concatenating (rows, heads, steps, head_dim) tensors copies the whole
    history every step; ``select`` (beam search following its beams, finished sentences leaving) copies
    the history once, with one ``index_select`` over the rows into a fresh buffer (a prefix of the
    first dimension is contiguous, so the copy lands in place). Per layer and step that reads and
    writes the history about 3 times instead of 5, which on a CPU is most of what attention costs when
    decoding (beam 5, batches of 64 on the Multi30k model: see tests/test_kernels.py for the equivalence
    and docs/performance/index.md for the speed). ``append`` returns (rows, heads, steps, head_dim) views.
    """

    def __init__(self, keys: torch.Tensor | None = None, values: torch.Tensor | None = None, length: int = 0):
        self.keys, self.values, self.length = keys, values, length

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Add the newest positions' keys and values, (rows, heads, steps, head_dim); return those of every
        position so far as (rows, heads, length, head_dim) views."""
        steps = k.size(2)
        end = self.length + steps
        if self.keys is None or end > self.keys.size(0) or self.keys.dtype != k.dtype:
            capacity = max(16, 2 * end)
            keys = k.new_empty((capacity, k.size(0), k.size(1), k.size(3)))
            values = v.new_empty((capacity, v.size(0), v.size(1), v.size(3)))
            if self.length:
                keys[:self.length], values[:self.length] = self.keys[:self.length], self.values[:self.length]
            self.keys, self.values = keys, values
        self.keys[self.length:end] = k.permute(2, 0, 1, 3)
        self.values[self.length:end] = v.permute(2, 0, 1, 3)
        self.length = end
        return self.keys[:end].permute(1, 2, 0, 3), self.values[:end].permute(1, 2, 0, 3)

    def select(self, rows: torch.Tensor) -> StepKeysValues:
        """A cache of rows ``rows`` of this one (in that order, repeats allowed); this one stays as it was."""
        if self.keys is None:
            return StepKeysValues()
        selected = []
        for history in (self.keys, self.values):
            buffer = history.new_empty((history.size(0), rows.numel(), *history.shape[2:]))
            torch.index_select(history[:self.length], 1, rows, out=buffer[:self.length])
            selected.append(buffer)
        return StepKeysValues(*selected, self.length)


def attention_over_steps(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(d_k)) v for the newest positions ``q`` (rows, heads, steps, head_dim) over the
    keys and values of ``StepKeysValues.append`` (no mask: each newest position sees every cached one).

    On CPU in float32 two batched matrix products over rows x heads read the strided history as it lies,
    where ``scaled_dot_product_attention`` is slower on it (it was ~1.5x slower on contiguous copies too,
    for a single query position per row). Elsewhere, in bf16/fp16 (whose softmax it computes in float32)
    and with kernels off: ``scaled_dot_product_attention``.
    """
    if not ENABLED or q.device.type != "cpu" or q.dtype != torch.float32:
        return F.scaled_dot_product_attention(q, k, v)
    rows, heads, steps, dim = q.shape
    keys = k.reshape(rows * heads, k.size(2), dim)  # a view: rows and heads are adjacent in the history
    values = v.reshape(rows * heads, v.size(2), dim)
    scores = torch.bmm(q.reshape(rows * heads, steps, dim), keys.transpose(1, 2)).mul_(1.0 / math.sqrt(dim))
    return torch.bmm(scores.softmax(dim=-1), values).view(rows, heads, steps, dim)
