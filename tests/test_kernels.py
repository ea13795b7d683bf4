"""The CPU kernels compute what the plain PyTorch layers compute, and the switch turns them off."""

import warnings

import pytest
import torch

from transformer_mt import kernels
from transformer_mt.kernels import FastDropout, Int8Linear, OneDNNLinear, dropout_mask, quantize_input, quantize_linear_layers


def test_dropout_mask_drops_p_and_keeps_the_mean():
    torch.manual_seed(0)
    for p in (0.1, 0.3):
        mask = dropout_mask((1000, 1000), p, torch.empty(0))
        dropped = (mask == 0).float().mean().item()
        assert abs(dropped - p) < 0.002, (p, dropped)
        assert abs(mask.mean().item() - 1.0) < 0.003
        assert set(mask.unique().tolist()) <= {0.0, mask.max().item()}


def test_dropout_mask_draws_from_the_seeded_generator():
    torch.manual_seed(3)
    first = dropout_mask((7, 33), 0.2, torch.empty(0))
    torch.manual_seed(3)
    assert torch.equal(first, dropout_mask((7, 33), 0.2, torch.empty(0)))
    assert not torch.equal(first, dropout_mask((7, 33), 0.2, torch.empty(0)))


def test_linear_layer_equals_torch_linear_forwards_and_backwards(monkeypatch):
    # OneDNNLinear multiplies with oneDNN on AMD CPUs (its own backward pass); it must compute what
    # F.linear computes, for 3-D inputs and without a bias too. Tested on every CPU, whichever path it picks.
    if not kernels.ONEDNN_LINEAR_WORKS:
        pytest.skip("this PyTorch build has no oneDNN linear")
    monkeypatch.setattr(kernels, "ONEDNN_LINEAR", True)
    torch.manual_seed(0)
    for bias in (True, False):
        layer = OneDNNLinear(32, 48, bias=bias)
        x = torch.randn(4, 7, 32, requires_grad=True)
        grad_y = torch.randn(4, 7, 48)
        layer(x).backward(grad_y)
        ours = [x.grad.clone(), layer.weight.grad.clone()] + ([layer.bias.grad.clone()] if bias else [])
        x.grad = None
        layer.zero_grad()
        torch.nn.functional.linear(x, layer.weight, layer.bias).backward(grad_y)
        expected = [x.grad, layer.weight.grad] + ([layer.bias.grad] if bias else [])
        for got, want in zip(ours, expected):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        with torch.no_grad():
            torch.testing.assert_close(layer(x), torch.nn.functional.linear(x, layer.weight, layer.bias),
                                       rtol=1e-5, atol=1e-5)


def test_the_switch_gives_the_plain_pytorch_path(monkeypatch):
    torch.manual_seed(0)
    layer, x = OneDNNLinear(16, 24), torch.randn(5, 16)
    monkeypatch.setattr(kernels, "ENABLED", False)
    with torch.no_grad():
        assert torch.equal(layer(x), torch.nn.functional.linear(x, layer.weight, layer.bias))  # bit for bit
    dropout = FastDropout(0.25).train()
    torch.manual_seed(1)
    ours = dropout(torch.ones(200, 50))
    torch.manual_seed(1)
    assert torch.equal(ours, torch.nn.functional.dropout(torch.ones(200, 50), 0.25, training=True))
    assert torch.equal(dropout.eval()(x), x)


def test_step_keys_values_equal_concatenated_and_reindexed_history():
    # The time-major cache with room to grow must hold what torch.cat of each step and index_select on
    # every reorder hold, through growth past its first capacity, rows that shrink and rows repeated.
    torch.manual_seed(0)
    cache, keys, values = kernels.StepKeysValues(), None, None
    rows = 5
    for step in range(40):
        k, v = torch.randn(rows, 2, 1, 3), torch.randn(rows, 2, 1, 3)
        keys = k if keys is None else torch.cat([keys, k], dim=2)
        values = v if values is None else torch.cat([values, v], dim=2)
        got_k, got_v = cache.append(k, v)
        assert torch.equal(got_k, keys) and torch.equal(got_v, values)
        if step % 7 == 3:  # follow beams: rows repeated and dropped, then fewer rows
            index = torch.randint(0, rows, (rows - (step > 20),))
            cache = cache.select(index)
            keys, values, rows = keys.index_select(0, index), values.index_select(0, index), index.numel()
            assert cache.length == keys.size(2)
    assert cache.keys.size(0) >= 40 and cache.length == 40


def test_selecting_rows_leaves_the_original_cache_as_it_was():
    cache = kernels.StepKeysValues()
    k = torch.arange(12.0).view(2, 2, 1, 3)
    cache.append(k, -k)
    swapped = cache.select(torch.tensor([1, 0]))
    cache.append(k + 100, -k)
    assert torch.equal(swapped.keys[:1].permute(1, 2, 0, 3), k[[1, 0]])
    assert torch.equal(cache.keys[:1].permute(1, 2, 0, 3), k) and cache.length == 2 and swapped.length == 1


def test_attention_over_steps_equals_scaled_dot_product_attention_and_the_switch_turns_it_off():
    torch.manual_seed(1)
    cache = kernels.StepKeysValues()
    for _ in range(6):
        k, v = cache.append(torch.randn(4, 3, 1, 8), torch.randn(4, 3, 1, 8))
    q = torch.randn(4, 3, 1, 8)
    expected = torch.nn.functional.scaled_dot_product_attention(q, k.contiguous(), v.contiguous())
    torch.testing.assert_close(kernels.attention_over_steps(q, k, v), expected, rtol=0, atol=1e-6)
    kernels.ENABLED = False
    try:
        torch.testing.assert_close(kernels.attention_over_steps(q, k, v), expected, rtol=0, atol=1e-6)
    finally:
        kernels.ENABLED = True


def int8_reference(layer: Int8Linear, x: torch.Tensor) -> torch.Tensor:
    """What Int8Linear must compute from its int8 numbers, written out in float32."""
    rows = x.reshape(-1, layer.in_features)
    q, scale, offset = quantize_input(rows, layer.input_levels)
    weight = layer.weight_int8.float() * layer.weight_scale[:, None]
    y = torch.nn.functional.linear(q[:rows.size(0)].float() * scale + offset, weight, layer.bias)
    return y.view(*x.shape[:-1], layer.out_features)


def test_quantize_input_rounds_to_the_nearest_level_uses_every_level_and_pads_rows_with_zeros():
    torch.manual_seed(0)
    for levels in (127, 255):
        for x in (torch.randn(50, 64) * 3 - 1, torch.rand(48, 64), torch.full((4, 8), 2.5)):
            q, scale, offset = quantize_input(x, levels)
            rows = x.size(0)
            assert q.dtype == torch.uint8 and q.size(0) % kernels.INT8_ROW_MULTIPLE == 0
            assert rows <= q.size(0) < rows + kernels.INT8_ROW_MULTIPLE and not q[rows:].any()
            assert q[:rows].min() == 0 and q[:rows].max() == (levels if x.max() > x.min() else 0)
            assert ((q[:rows].float() * scale + offset) - x).abs().max() <= scale / 2 + 1e-5


def test_int8_linear_equals_its_int8_numbers_multiplied_in_float32(monkeypatch):
    # oneDNN's int8 product (int32 sums) must equal the float32 product of the same int8 numbers, for 3-D
    # inputs, without a bias, and at the extremes: inputs at the top of their range times weights of +-127
    # are what overflowed the int16 pair sums of CPUs without VNNI when inputs had 8 bits.
    if not kernels.INT8_LINEAR_WORKS:
        pytest.skip("this PyTorch build has no oneDNN int8 linear")
    monkeypatch.setattr(kernels, "INT8_MIN_MULTIPLY_ADDS", 0)  # int8 however small the product
    monkeypatch.setattr(kernels, "INT8_BACKEND", "onednn")
    torch.manual_seed(0)
    extreme = torch.nn.Linear(64, 40)
    with torch.no_grad():
        extreme.weight.copy_(torch.where(torch.rand(40, 64) < 0.5, -1.0, 1.0))
    cases = [(torch.nn.Linear(32, 48), torch.randn(4, 7, 32)),  # 28 rows: padded to 32
             (torch.nn.Linear(256, 8000, bias=False), torch.randn(10, 256)),
             (extreme, torch.full((3, 64), 5.0).index_fill_(1, torch.tensor([0]), -0.01)),
             (extreme, torch.rand(6, 64) * 3)]
    for linear, x in cases:
        layer = Int8Linear(linear)
        with torch.no_grad():
            ours = layer(x)
            torch.testing.assert_close(ours, int8_reference(layer, x), rtol=1e-5, atol=1e-4)
            monkeypatch.setattr(kernels, "ENABLED", False)  # the switch: the same numbers in float32
            torch.testing.assert_close(layer(x), int8_reference(layer, x), rtol=1e-5, atol=1e-4)
            monkeypatch.setattr(kernels, "ENABLED", True)
            # and int8 is close to the float32 layer: errors of the inputs' and weights' rounding steps
            float_y = linear(x)
            assert (ours - float_y).abs().max() < 0.02 * float_y.abs().max() + 1e-3


def test_int8_linear_multiplies_small_inputs_and_non_finite_values_in_float32(monkeypatch):
    # Below INT8_MIN_MULTIPLY_ADDS (batch-1 decoding) the layer is the float32 layer, bit for bit; above it,
    # int8; an empty input or one with a NaN is float32 whatever its size (a NaN stays in its row).
    monkeypatch.setattr(kernels, "INT8_BACKEND", "onednn")
    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 100)
    layer = Int8Linear(linear)
    assert layer.weight is linear.weight  # the same parameter: a tied weight stays tied
    x = torch.randn(20, 64)
    with torch.no_grad():
        monkeypatch.setattr(kernels, "INT8_MIN_MULTIPLY_ADDS", 20 * 64 * 100 + 1)
        assert torch.equal(layer(x), linear(x))
        monkeypatch.setattr(kernels, "INT8_MIN_MULTIPLY_ADDS", 20 * 64 * 100)
        assert not torch.equal(layer(x), linear(x))
        torch.testing.assert_close(layer(x), int8_reference(layer, x), rtol=1e-5, atol=1e-4)
        assert layer(torch.empty(0, 64)).shape == (0, 100)
        x[1, 2] = float("nan")
        y = layer(x)
        expected = linear(x)
    assert y[1].isnan().all() and not y[[0, 2]].isnan().any()
    torch.testing.assert_close(y[[0, 2]], expected[[0, 2]], rtol=0, atol=0)


def test_fbgemm_backend_is_pytorchs_dynamic_int8_layer_and_missing_it_means_onednn(monkeypatch):
    torch.manual_seed(0)
    linear, x = torch.nn.Linear(64, 100), torch.randn(3, 20, 64)
    monkeypatch.setattr(kernels, "INT8_MIN_MULTIPLY_ADDS", 0)
    monkeypatch.setattr(kernels, "INT8_BACKEND", "fbgemm")
    layer = Int8Linear(linear)
    with torch.no_grad():
        if layer.fbgemm is not None:  # PyTorch still has it
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                reference = torch.ao.quantization.quantize_dynamic(torch.nn.Sequential(linear), {torch.nn.Linear},
                                                                   dtype=torch.qint8)
            assert torch.equal(layer(x), reference(x))
        monkeypatch.setattr(kernels, "fbgemm_linear", lambda linear: None)  # a PyTorch without it
        layer = Int8Linear(linear)
        assert layer.fbgemm is None and (layer.packed is not None or not kernels.INT8_LINEAR_WORKS)
        torch.testing.assert_close(layer(x), int8_reference(layer, x), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("backend", ["fbgemm", "onednn"])
def test_quantize_linear_layers_replaces_every_linear_layer_and_keeps_the_model_close(monkeypatch, backend):
    from transformer_mt.config import ModelConfig
    from transformer_mt.model import build_model
    torch.manual_seed(0)
    model = build_model(ModelConfig(d_model=32, ffn_dim=64, num_heads=4, num_encoder_layers=2, num_decoder_layers=2,
                                    dropout=0.0), 50, 50, 0).eval()
    src, tgt = torch.randint(4, 50, (3, 9)), torch.randint(4, 50, (3, 6))
    monkeypatch.setattr(kernels, "INT8_MIN_MULTIPLY_ADDS", 0)  # int8 however small the product
    monkeypatch.setattr(kernels, "INT8_BACKEND", backend)
    with torch.no_grad():
        expected = model(src, tgt)
        linear_layers = sum(isinstance(m, torch.nn.Linear) for m in model.modules())
        quantized = quantize_linear_layers(model)
        assert not [m for m in quantized.modules() if isinstance(m, torch.nn.Linear)]
        assert sum(isinstance(m, Int8Linear) for m in quantized.modules()) == linear_layers >= 2 * 4 + 2 * 7 + 1
        got = quantized(src, tgt)
    assert not torch.equal(got, expected)
    assert torch.nn.functional.cosine_similarity(got.flatten(), expected.flatten(), dim=0) > 0.999
