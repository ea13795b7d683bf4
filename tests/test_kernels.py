"""The CPU kernels compute what the plain PyTorch layers compute, and the switch turns them off."""

import pytest
import torch

from transformer_mt import kernels
from transformer_mt.kernels import FastDropout, OneDNNLinear, dropout_mask


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
