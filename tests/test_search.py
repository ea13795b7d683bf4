"""Greedy and beam search: agreement with each other and with uncached, unbatched decoding."""

import pytest
import torch
from conftest import tiny_model

from transformer_mt.data.tokenizer import BOS_ID, EOS_ID, PAD_ID
from transformer_mt.decoding.search import beam_search, greedy_search


def peaked_model(seed):
    """A random model with sharpened output so hypotheses end at different lengths."""
    model = tiny_model(vocab_size=12, seed=seed, share=False, tie_output=False)
    with torch.no_grad():
        model.generator.weight.mul_(6.0)
        model.generator.weight[EOS_ID].mul_(0.6)
    return model


def sources(seed, batch=6, length=7):
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(4, 12, (batch, length), generator=g)
    for row in range(batch):  # different lengths: padding in the batch
        src[row, length - row % 4:] = PAD_ID
    return src


def reference_greedy(model, src_row, max_len):
    """Uncached greedy decoding of one sentence: full forward pass at every step."""
    tokens = [BOS_ID]
    with torch.no_grad():
        for _ in range(max_len):
            logits = model(src_row.unsqueeze(0), torch.tensor([tokens]))[0, -1]
            logits[[PAD_ID, BOS_ID]] = float("-inf")  # never generated
            token = int(logits.argmax())
            if token == EOS_ID:
                break
            tokens.append(token)
    return tokens[1:]


def test_greedy_equals_uncached_unbatched_reference():
    for seed in range(2):
        model = peaked_model(seed)
        src = sources(seed)
        batched = greedy_search(model, src, max_length_a=1.0, max_length_b=5)
        for row in range(src.size(0)):
            real = src[row][src[row] != PAD_ID]
            assert batched[row] == reference_greedy(model, real, len(real) + 5)


def test_cached_search_equals_search_without_cache():
    # The key/value cache is an optimisation only: recomputing the whole prefix every step
    # must give the same tokens (and, up to float rounding, the same scores).
    for seed in range(3):
        model = peaked_model(seed)
        src = sources(seed)
        assert greedy_search(model, src, 1.0, 5) == greedy_search(model, src, 1.0, 5, incremental=False)
        cached = beam_search(model, src, beam_size=4, max_length_a=1.0, max_length_b=5, nbest=4)
        uncached = beam_search(model, src, beam_size=4, max_length_a=1.0, max_length_b=5, nbest=4,
                               incremental=False)
        for with_cache, without_cache in zip(cached, uncached):
            assert [h.tokens for h in with_cache] == [h.tokens for h in without_cache]
            assert [h.score for h in with_cache] == pytest.approx([h.score for h in without_cache], abs=1e-4)


def test_beam_size_one_equals_greedy():
    for seed in range(4):
        model = peaked_model(seed)
        src = sources(seed)
        greedy = greedy_search(model, src, max_length_a=1.0, max_length_b=5)
        beam = beam_search(model, src, beam_size=1, max_length_a=1.0, max_length_b=5)
        assert [hyps[0].tokens for hyps in beam] == greedy


def test_batched_beam_search_equals_one_sentence_at_a_time():
    model = peaked_model(7)
    src = sources(7, batch=5)
    batched = beam_search(model, src, beam_size=4, length_penalty=1.0, nbest=3)
    for row in range(src.size(0)):
        real = src[row][src[row] != PAD_ID].unsqueeze(0)
        alone = beam_search(model, real, beam_size=4, length_penalty=1.0, nbest=3)[0]
        assert [h.tokens for h in batched[row]] == [h.tokens for h in alone]
        for a, b in zip(batched[row], alone):
            assert abs(a.score - b.score) < 1e-4


def test_beam_hypotheses_are_sorted_scored_and_without_special_tokens():
    model = peaked_model(3)
    src = sources(3)
    results = beam_search(model, src, beam_size=5, nbest=5, max_length_a=1.0, max_length_b=4)
    for row, hyps in enumerate(results):
        assert 1 <= len(hyps) <= 5
        scores = [h.score for h in hyps]
        assert scores == sorted(scores, reverse=True)
        limit = int((src[row] != PAD_ID).sum()) + 4
        for h in hyps:
            assert BOS_ID not in h.tokens and EOS_ID not in h.tokens and PAD_ID not in h.tokens
            assert len(h.tokens) <= limit
            # The reported log-probability is the model's own score of that output.
            tgt_in = torch.tensor([[BOS_ID] + h.tokens])
            with torch.no_grad():
                logits = model(src[row:row + 1], tgt_in)[0]
                logits[:, [PAD_ID, BOS_ID]] = float("-inf")
                lprobs = torch.log_softmax(logits, dim=-1)
            ends_with_eos = len(h.tokens) < limit
            targets = h.tokens + ([EOS_ID] if ends_with_eos else [])
            expected = sum(float(lprobs[i, t]) for i, t in enumerate(targets))
            assert abs(expected - h.log_prob) < 1e-3


def test_wider_beam_never_finds_a_worse_best_log_probability_than_greedy_on_average():
    model = peaked_model(11)
    src = sources(11, batch=8)
    greedy = beam_search(model, src, beam_size=1, length_penalty=0.0)
    wide = beam_search(model, src, beam_size=6, length_penalty=0.0)
    assert sum(h[0].log_prob for h in wide) >= sum(h[0].log_prob for h in greedy) - 1e-4


@pytest.mark.parametrize("early_exit", [True, False])
def test_cached_beam_search_equals_uncached_with_either_stopping_rule(early_exit):
    for seed in range(3):
        model, src = peaked_model(seed), sources(seed)
        options = dict(beam_size=4, max_length_a=1.0, max_length_b=5, nbest=1, early_exit=early_exit)
        cached = beam_search(model, src, **options)
        uncached = beam_search(model, src, incremental=False, **options)
        assert [h[0].tokens for h in cached] == [h[0].tokens for h in uncached]


def test_early_exit_decodes_fewer_rows_and_returns_a_hypothesis_the_full_search_finds():
    rows_decoded = {True: 0, False: 0}
    for seed in range(4):
        model, src = peaked_model(seed), sources(seed)
        decode = model.decode
        results = {}
        for early_exit in (True, False):
            def counting_decode(tgt_tokens, *args, early_exit=early_exit, decode=decode, **kwargs):
                rows_decoded[early_exit] += tgt_tokens.size(0)
                return decode(tgt_tokens, *args, **kwargs)

            model.decode = counting_decode
            results[early_exit] = beam_search(model, src, beam_size=4, max_length_a=1.0, max_length_b=5,
                                              nbest=1 if early_exit else 4, early_exit=early_exit)
        # The search is the same until a sentence stops, so what early exit returns was found by
        # the full search too (which keeps the first beam_size hypotheses that end).
        for early, full in zip(results[True], results[False]):
            assert early[0].tokens in [h.tokens for h in full]
    assert rows_decoded[True] < rows_decoded[False]
