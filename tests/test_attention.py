"""Attention weights out of the model and search, only when asked (attention plots, alignments)."""

import pytest
import torch
from conftest import tiny_model

from transformer_mt.data.tokenizer import BOS_ID, EOS_ID, PAD_ID
from transformer_mt.decoding.search import beam_search, greedy_search


def random_tokens(batch, length, vocab=23, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(4, vocab, (batch, length), generator=g)


def padded_sources(seed=0, vocab=23):
    src = random_tokens(3, 8, vocab, seed)
    src[0, 6:] = PAD_ID
    src[2, 3:] = PAD_ID
    return src


@pytest.mark.parametrize("pre_norm", [False, True])
def test_weights_are_distributions_over_the_real_source_and_change_nothing(pre_norm):
    model = tiny_model(pre_norm=pre_norm)
    src = padded_sources()
    tgt = torch.cat([torch.full((3, 1), BOS_ID), random_tokens(3, 5, seed=1)], dim=1)
    with torch.no_grad():
        memory, src_mask = model.encode(src)
        plain = model.decode(tgt, memory, src_mask)
        hidden, attention = model.decode(tgt, memory, src_mask, return_attention=True, return_self_attention=True)
    torch.testing.assert_close(hidden, plain, rtol=0, atol=1e-5)
    assert set(attention) == {"cross", "self"}
    assert len(attention["cross"]) == len(attention["self"]) == len(model.decoder_layers)
    real = (src != PAD_ID)[:, None, None, :].expand(3, 4, 6, 8)
    for cross, self_attention in zip(attention["cross"], attention["self"]):
        assert cross.shape == (3, 4, 6, 8) and self_attention.shape == (3, 4, 6, 6)
        torch.testing.assert_close(cross.sum(dim=-1), torch.ones(3, 4, 6))
        assert (cross[~real] == 0).all() and (cross[real] > 0).all()
        torch.testing.assert_close(self_attention.sum(dim=-1), torch.ones(3, 4, 6))
        assert (self_attention.triu(diagonal=1) == 0).all()  # no position attends to a later one
    with torch.no_grad():  # one kind at a time
        assert set(model.decode(tgt, memory, src_mask, return_attention=True)[1]) == {"cross"}
        assert set(model.decode(tgt, memory, src_mask, return_self_attention=True)[1]) == {"self"}


def test_cached_decoding_returns_the_weights_of_a_full_forward_pass():
    # Also with beams sharing their sentence's encoder output (cross-attention computes a
    # sentence's beams as extra query positions): each beam gets its own row back.
    model = tiny_model()
    beams = 2
    src = padded_sources()
    tgt = torch.cat([torch.full((6, 1), BOS_ID), random_tokens(6, 5, seed=2)], dim=1)
    copies = torch.arange(3).repeat_interleave(beams)
    with torch.no_grad():
        memory, src_mask = model.encode(src)
        _, full = model.decode(tgt, memory[copies], src_mask[copies], return_attention=True,
                               return_self_attention=True)
        cache = model.new_cache()
        steps = [model.decode(tgt[:, t:t + 1], memory, src_mask, cache, return_attention=True,
                              return_self_attention=True)[1] for t in range(tgt.size(1))]
    for layer in range(len(model.decoder_layers)):
        cross = torch.cat([step["cross"][layer] for step in steps], dim=2)
        torch.testing.assert_close(cross, full["cross"][layer], rtol=0, atol=1e-6)
        for t, step in enumerate(steps):  # the newest position attends to itself and every earlier one
            torch.testing.assert_close(step["self"][layer], full["self"][layer][:, :, t:t + 1, :t + 1],
                                       rtol=0, atol=1e-6)


def peaked_model(seed):
    model = tiny_model(vocab_size=12, seed=seed, share=False, tie_output=False)
    with torch.no_grad():
        model.generator.weight.mul_(6.0)
        model.generator.weight[EOS_ID].mul_(0.6)
    return model


def teacher_forced_attention(model, src_row, tokens, steps):
    """The weights a full forward pass over bos + tokens gives for the first ``steps`` outputs."""
    real = src_row[src_row != PAD_ID].unsqueeze(0)
    prefix = torch.tensor([[BOS_ID] + tokens])[:, :steps]
    with torch.no_grad():
        memory, src_mask = model.encode(real)
        _, attention = model.decode(prefix, memory, src_mask, return_attention=True, return_self_attention=True)
    return {kind: torch.stack(layers, dim=1)[0] for kind, layers in attention.items()}


def check_hypothesis_attention(model, src_row, tokens, attention, max_len):
    ended = len(tokens) < max_len  # else cut at the length limit: no step produced the end token
    steps = len(tokens) + 1 if ended else len(tokens)
    layers, heads = len(model.decoder_layers), 4
    assert attention["cross"].shape == (layers, heads, steps, int((src_row != PAD_ID).sum()))
    assert attention["self"].shape == (layers, heads, steps, steps)
    expected = teacher_forced_attention(model, src_row, tokens, steps)
    for kind in ("cross", "self"):
        torch.testing.assert_close(attention[kind], expected[kind], rtol=0, atol=1e-5)


@pytest.mark.parametrize("incremental", [True, False])
def test_search_returns_each_hypothesis_its_own_weights_and_the_same_tokens(incremental):
    for seed in range(2):
        model = peaked_model(seed)
        src = random_tokens(5, 7, vocab=12, seed=seed)
        for row in range(5):
            src[row, 7 - row % 4:] = PAD_ID
        max_lens = ((src != PAD_ID).sum(dim=1) * 1.0 + 3).tolist()
        tokens, attentions = greedy_search(model, src, 1.0, 3, incremental, return_attention=True,
                                           return_self_attention=True)
        assert tokens == greedy_search(model, src, 1.0, 3, incremental)
        for row in range(5):
            check_hypothesis_attention(model, src[row], tokens[row], attentions[row], max_lens[row])
        plain = beam_search(model, src, 3, max_length_a=1.0, max_length_b=3, nbest=3, incremental=incremental)
        with_attention = beam_search(model, src, 3, max_length_a=1.0, max_length_b=3, nbest=3,
                                     incremental=incremental, return_attention=True, return_self_attention=True)
        for row, (hyps, hyps_with_attention) in enumerate(zip(plain, with_attention)):
            assert [h.tokens for h in hyps] == [h.tokens for h in hyps_with_attention]
            assert [h.score for h in hyps] == pytest.approx([h.score for h in hyps_with_attention], abs=1e-5)
            assert all(h.attention is None for h in hyps)
            for hyp in hyps_with_attention:  # the rows followed the beams, whichever survived
                check_hypothesis_attention(model, src[row], hyp.tokens, hyp.attention, max_lens[row])


def test_cross_attention_alone_is_kept_without_self_attention():
    model = peaked_model(0)
    src = random_tokens(2, 5, vocab=12)
    hyps = beam_search(model, src, 2, max_length_a=1.0, max_length_b=3, return_attention=True)
    assert set(hyps[0][0].attention) == {"cross"}


def test_attention_layer_keeps_that_layers_head_average_only():
    model = peaked_model(1)
    src = random_tokens(3, 6, vocab=12, seed=3)
    src[1, 4:] = PAD_ID
    full = beam_search(model, src, 3, max_length_a=1.0, max_length_b=3, nbest=2, return_attention=True)
    for layer in (1, 2):
        one = beam_search(model, src, 3, max_length_a=1.0, max_length_b=3, nbest=2, return_attention=True,
                          attention_layer=layer)
        for hyps_full, hyps_one in zip(full, one):
            for hyp_full, hyp_one in zip(hyps_full, hyps_one):
                expected = hyp_full.attention["cross"][layer - 1].mean(dim=0)
                assert hyp_one.attention["cross"].shape == (1, 1, *expected.shape)
                torch.testing.assert_close(hyp_one.attention["cross"][0, 0], expected)
    _, [attention, *_] = greedy_search(model, src, 1.0, 3, return_attention=True, attention_layer=2)
    assert attention["cross"].shape[:2] == (1, 1)
