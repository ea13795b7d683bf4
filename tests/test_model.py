"""Properties of the Transformer: causality, padding invariance, cached decoding."""

import pytest
import torch
from conftest import tiny_model

from transformer_mt.data.tokenizer import BOS_ID, PAD_ID
from transformer_mt.model import subsequent_mask


def random_tokens(batch, length, vocab=23, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(4, vocab, (batch, length), generator=g)


def test_subsequent_mask_is_lower_triangular():
    mask = subsequent_mask(4)
    assert mask.tolist() == [[True, False, False, False], [True, True, False, False],
                             [True, True, True, False], [True, True, True, True]]


@pytest.mark.parametrize("pre_norm", [False, True])
def test_future_target_token_never_changes_earlier_outputs(pre_norm):
    model = tiny_model(pre_norm=pre_norm)
    src = random_tokens(2, 7)
    tgt = random_tokens(2, 6, seed=1)
    base = model(src, tgt)
    for t in range(1, 6):
        changed = tgt.clone()
        changed[:, t] = (changed[:, t] + 1 - 4) % 19 + 4
        out = model(src, changed)
        torch.testing.assert_close(out[:, :t], base[:, :t], rtol=0, atol=1e-6)
        assert not torch.allclose(out[:, t:], base[:, t:]), "a changed token must change later outputs"


@pytest.mark.parametrize("pre_norm", [False, True])
def test_padding_never_changes_real_positions(pre_norm):
    model = tiny_model(pre_norm=pre_norm)
    src = random_tokens(1, 5)
    tgt = random_tokens(1, 4, seed=1)
    alone = model(src, tgt)
    # Put the sentence in a batch with a longer one, so both sides get padded.
    long_src = random_tokens(1, 9, seed=2)
    long_tgt = random_tokens(1, 8, seed=3)
    src_batch = torch.full((2, 9), PAD_ID)
    src_batch[0, :5], src_batch[1] = src[0], long_src[0]
    tgt_batch = torch.full((2, 8), PAD_ID)
    tgt_batch[0, :4], tgt_batch[1] = tgt[0], long_tgt[0]
    batched = model(src_batch, tgt_batch)
    torch.testing.assert_close(batched[0, :4], alone[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(batched[1], model(long_src, long_tgt)[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("pre_norm", [False, True])
@pytest.mark.parametrize("share", [True, False])
def test_incremental_decoding_equals_full_forward(pre_norm, share):
    model = tiny_model(pre_norm=pre_norm, share=share)
    src = random_tokens(3, 8)
    src[0, 6:] = PAD_ID  # a padded source row exercises the cross-attention mask
    tgt = torch.cat([torch.full((3, 1), BOS_ID), random_tokens(3, 6, seed=4)], dim=1)
    with torch.no_grad():
        full = model(src, tgt)
        memory, src_mask = model.encode(src)
        cache = model.new_cache()
        steps = []
        for t in range(tgt.size(1)):
            hidden = model.decode(tgt[:, t:t + 1], memory, src_mask, cache)
            steps.append(model.generator(hidden))
    incremental = torch.cat(steps, dim=1)
    torch.testing.assert_close(incremental, full, rtol=0, atol=1e-5)


def test_reorder_cache_follows_beams():
    model = tiny_model()
    src = random_tokens(2, 5)
    tgt = torch.cat([torch.full((2, 1), BOS_ID), random_tokens(2, 3, seed=5)], dim=1)
    with torch.no_grad():
        memory, src_mask = model.encode(src)
        cache = model.new_cache()
        for t in range(3):
            model.decode(tgt[:, t:t + 1], memory, src_mask, cache)
        # Swap the two rows (and sentences): decoding the next token must give the swapped results.
        swap = torch.tensor([1, 0])
        cache_swapped = model.reorder_cache(cache, swap, swap)
        out = model.decode(tgt[:, 3:4], memory, src_mask, cache)
        out_swapped = model.decode(tgt[swap, 3:4], memory[swap], src_mask[swap], cache_swapped)
    torch.testing.assert_close(out_swapped, out[swap])


def test_beams_sharing_their_sentences_encoder_output_equal_beams_with_copies():
    # Beam search decodes k rows per sentence against one row of memory (the beams become extra
    # query positions in cross-attention); that must equal giving every row its own copy.
    model = tiny_model()
    beams = 3
    src = random_tokens(2, 7)
    src[1, 5:] = PAD_ID
    tgt = torch.cat([torch.full((6, 1), BOS_ID), random_tokens(6, 4, seed=6)], dim=1)
    copies = torch.arange(2).repeat_interleave(beams)
    with torch.no_grad():
        memory, src_mask = model.encode(src)
        shared = model.decode(tgt, memory, src_mask)
        copied = model.decode(tgt, memory[copies], src_mask[copies])
        cache_shared, cache_copied = model.new_cache(), model.new_cache()
        for t in range(tgt.size(1)):
            step_shared = model.decode(tgt[:, t:t + 1], memory, src_mask, cache_shared)
            step_copied = model.decode(tgt[:, t:t + 1], memory[copies], src_mask[copies], cache_copied)
            torch.testing.assert_close(step_shared, step_copied, rtol=0, atol=1e-5)
    torch.testing.assert_close(shared, copied, rtol=0, atol=1e-5)


def test_inputs_longer_than_max_positions_do_not_crash():
    model = tiny_model()  # max_positions 64
    src = random_tokens(1, 100)
    tgt = random_tokens(1, 80)
    with torch.no_grad():
        assert model(src, tgt).shape == (1, 80, 23)


def test_tied_and_shared_embeddings_are_one_tensor():
    model = tiny_model(share=True)
    assert model.generator.weight is model.tgt_embed.embedding.weight
    assert model.src_embed.embedding is model.tgt_embed.embedding
    untied = tiny_model(share=False)
    assert untied.src_embed.embedding is not untied.tgt_embed.embedding


def test_spelled_out_attention_equals_scaled_dot_product_attention():
    """The CPU training path with attention dropout computes the same weights as SDPA."""
    from transformer_mt.model import MultiHeadAttention

    torch.manual_seed(0)
    attn = MultiHeadAttention(16, 4, dropout=0.0, self_attention=True)
    q, k, v = (torch.randn(2, 4, 5, 4) for _ in range(3))
    key_mask = torch.tensor([[True] * 5, [True, True, True, False, False]]).view(2, 1, 1, 5)
    for mask, causal in ((key_mask, False), (None, True), (None, False)):
        expected = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)
        assert torch.allclose(attn.spelled_out_attention(q, k, v, mask, causal)[0], expected, atol=1e-6)


def test_positions_past_the_table_are_computed_without_changing_the_module():
    from transformer_mt.model import PositionalEncoding

    small, big = PositionalEncoding(16, 8), PositionalEncoding(16, 64)
    table_before = small.table
    for length, offset in ((12, 0), (1, 30), (5, 6)):
        torch.testing.assert_close(small(length, offset), big(length, offset), rtol=0, atol=1e-6)
    assert small.table is table_before and small.table.size(0) == 8
