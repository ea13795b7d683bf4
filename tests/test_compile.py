"""``training.compile``: the model under torch.compile computes what it computes eagerly, in few graphs.

A graph break inside a layer (an in-place trick, a value torch.compile cannot trace) would make it
recompile the layer for every call site until its recompile limit, then run eagerly while still
paying for the compiler: this once happened unnoticed, because nothing compiled the model.
"""

import shutil

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_model

from transformer_mt.kernels import FastDropout
from transformer_mt.model import MultiHeadAttention


def random_batch(batch, source_length, target_length, seed):
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(4, 23, (batch, source_length), generator=g)
    tgt = torch.randint(4, 23, (batch, target_length), generator=g)
    src[0, -2:] = 0  # padding in the source and the target, as training batches have
    tgt[0, -1] = 0
    return src, tgt, tgt != 0


def loss_and_gradients(model, src, tgt, output_mask, run=None):
    """Loss and gradients of ``model``'s parameters, computed by ``run`` (the model itself or its compiled form)."""
    model.zero_grad()
    logits = (model if run is None else run)(src, tgt, output_mask)
    loss = F.cross_entropy(logits, tgt[output_mask])
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


@pytest.mark.skipif(not (shutil.which("g++") or shutil.which("c++")),
                    reason="torch.compile on CPU builds C++ kernels and this machine has no C++ compiler")
def test_compiled_training_step_equals_eager_over_changing_shapes():
    torch._dynamo.reset()
    model = tiny_model(pre_norm=True).train()
    compiled = torch.compile(model)
    for seed, shape in enumerate([(3, 7, 6), (5, 9, 4), (2, 5, 8)]):  # batches of changing shape
        batch = random_batch(*shape, seed=seed)
        expected_loss, expected_grads = loss_and_gradients(model, *batch)
        loss, grads = loss_and_gradients(model, *batch, run=compiled)
        torch.testing.assert_close(loss, expected_loss, rtol=1e-5, atol=1e-5)
        assert grads.keys() == expected_grads.keys()
        for name in grads:
            torch.testing.assert_close(grads[name], expected_grads[name], rtol=1e-4, atol=1e-5, msg=name)


def test_model_compiles_without_breaking_inside_its_layers():
    torch._dynamo.reset()
    model = tiny_model(pre_norm=True).train()
    for module in model.modules():  # every dropout on (residual, attention, activation): the CPU mask must not break
        if isinstance(module, FastDropout):
            module.p = 0.1
        if isinstance(module, MultiHeadAttention):
            module.dropout = 0.1  # selects the spelled-out attention, whose weights get the CPU mask
    src, tgt, output_mask = random_batch(3, 7, 6, seed=0)
    for tensor in (src, tgt, output_mask):  # batch and lengths symbolic, as after the first batches of training
        torch._dynamo.mark_dynamic(tensor, 0)
        torch._dynamo.mark_dynamic(tensor, 1)
    explanation = torch._dynamo.explain(model)(src, tgt, output_mask)
    # The one break allowed: selecting the non-padding positions before the output layer (a shape
    # that depends on the data), between the decoder and the output projection.
    reasons = [str(b.reason) for b in explanation.break_reasons]
    assert explanation.graph_break_count <= 1, reasons
    assert all("nonzero" in reason for reason in reasons), reasons
