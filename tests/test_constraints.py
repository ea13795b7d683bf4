"""Lexically constrained beam search (decoding/constraints.py): every constraint appears, sentences without
constraints decode exactly as plain beam search does beside them, and the cache changes nothing."""

import pytest
import torch
from conftest import tiny_model
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from transformer_mt.data.tokenizer import EOS_ID, PAD_ID
from transformer_mt.decoding.constraints import START, SentenceConstraints
from transformer_mt.decoding.search import beam_search

VOCAB = 14


def peaked_model(seed):
    model = tiny_model(vocab_size=VOCAB, seed=seed, share=False, tie_output=False)
    with torch.no_grad():
        model.generator.weight.mul_(5.0)
    return model


MODELS = {seed: peaked_model(seed) for seed in range(3)}


def sources(seed, batch, length=6):
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(4, VOCAB, (batch, length), generator=g)
    for row in range(batch):
        src[row, length - row % 3:] = PAD_ID
    return src


def holds(tokens: list[int], phrase: list[int]) -> bool:
    return any(tokens[i:i + len(phrase)] == phrase for i in range(len(tokens) - len(phrase) + 1))


phrase = st.lists(st.integers(4, VOCAB - 1), min_size=1, max_size=3)
sentence_constraints = st.lists(phrase, max_size=3)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted(MODELS)), st.lists(sentence_constraints, min_size=1, max_size=4),
       st.integers(1, 6), st.booleans())
def test_every_constraint_appears_and_unconstrained_sentences_decode_as_plain_search(seed, constraints, beam,
                                                                                     early_exit):
    model = MODELS[seed]
    src = sources(seed, len(constraints))
    options = dict(beam_size=beam, max_length_a=1.0, max_length_b=4, nbest=1, early_exit=early_exit)
    plain = beam_search(model, src, **options)
    constrained = beam_search(model, src, constraints=constraints, **options)
    for row, phrases in enumerate(constraints):
        [best] = constrained[row]
        assert EOS_ID not in best.tokens
        if not phrases:  # decoded in the same batch as constrained ones: what plain search gives (the scores up to
            # rounding: a constrained sentence may stay longer in the batch, and a batch of other rows rounds apart)
            assert best.tokens == plain[row][0].tokens and best.score == pytest.approx(plain[row][0].score, rel=1e-5)
        else:
            assert best.constraints_met
            for p in phrases:
                assert holds(best.tokens, p), (p, best.tokens)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted(MODELS)), st.lists(sentence_constraints, min_size=1, max_size=3), st.integers(2, 5))
def test_cached_constrained_search_equals_search_without_cache(seed, constraints, beam):
    model = MODELS[seed]
    src = sources(seed + 7, len(constraints))
    options = dict(beam_size=beam, max_length_a=1.0, max_length_b=4, nbest=beam, constraints=constraints)
    cached = beam_search(model, src, **options)
    uncached = beam_search(model, src, incremental=False, **options)
    assert [[h.tokens for h in hyps] for hyps in cached] == [[h.tokens for h in hyps] for hyps in uncached]


def test_no_constraint_anywhere_is_the_plain_search():
    model = MODELS[0]
    src = sources(1, 4)
    plain = beam_search(model, src, beam_size=4, nbest=4)
    for none in ([[]] * 4, None):
        same = beam_search(model, src, beam_size=4, nbest=4, constraints=none)
        assert [[(h.tokens, h.score) for h in hyps] for hyps in same] == \
               [[(h.tokens, h.score) for h in hyps] for hyps in plain]


def test_a_constraint_the_model_would_not_choose_is_placed_and_scored_as_the_model_scores_it():
    model = MODELS[1]
    src = sources(3, 1)
    [[free]] = beam_search(model, src, beam_size=5)
    unlikely = next(t for t in range(4, VOCAB) if t not in free.tokens)
    [[forced]] = beam_search(model, src, beam_size=5, constraints=[[[unlikely, unlikely]]])
    assert holds(forced.tokens, [unlikely, unlikely])
    assert forced.log_prob <= free.log_prob  # the model's own choice was the best; the term costs something


@pytest.mark.parametrize("phrases, tokens, met", [
    ([[5, 6]], [5, 6], 1),
    ([[5, 6]], [5, 7, 5, 6], 1),       # left midway, started again
    ([[5, 6]], [5, 5, 6], 1),          # a repeated first token starts it again
    ([[5, 6], [7]], [7, 5, 6], 3),
    ([[5, 6], [5, 7]], [5, 7], 2),     # two with the same first token: both followed
    ([[4, 4, 4], [4]], [4, 4, 4], 3),  # one inside the other: one output meets both
    ([[5, 6, 5, 7]], [5, 6, 5, 6, 5, 7], 1),  # a restart inside a partial match
    ([[5, 6, 7]], [5, 6], 0),
])
def test_the_state_follows_the_tokens(phrases, tokens, met):
    sentence = SentenceConstraints(phrases)
    state = START
    for token in tokens:
        state = sentence.advance(state, token)
    assert state.met == met


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted(MODELS)), st.lists(st.lists(phrase, min_size=1, max_size=2), min_size=1, max_size=3),
       st.integers(1, 4), st.integers(1, 3))
def test_with_no_repeat_ngrams_every_term_appears_scored_as_the_model_scores_it(seed, constraints, beam, ngram):
    """A term's words are let through no_repeat_ngram_size (a term may repeat a word), and the score of every
    translation is still the model's own log-probability of its tokens (the exempt ones' scores once read with
    the hypothesis's score added twice)."""
    from transformer_mt.data.tokenizer import BOS_ID
    from transformer_mt.decoding.logits import RepetitionControl

    model = MODELS[seed]
    src = sources(seed, len(constraints))
    results = beam_search(model, src, beam_size=beam, max_length_a=1.0, max_length_b=4, nbest=1,
                          constraints=constraints, repetition=RepetitionControl(no_repeat_ngram_size=ngram))
    for row, phrases in enumerate(constraints):
        [best] = results[row]
        assert best.constraints_met and all(holds(best.tokens, p) for p in phrases)
        with torch.no_grad():
            logits = model(src[row:row + 1], torch.tensor([[BOS_ID] + best.tokens]))[0]
            logits[:, [PAD_ID, BOS_ID]] = float("-inf")
            lprobs = torch.log_softmax(logits, dim=-1)
        for ends_with_eos in (True, False):  # at the length limit a hypothesis ends without eos
            targets = best.tokens + ([EOS_ID] if ends_with_eos else [])
            expected = sum(float(lprobs[i, t]) for i, t in enumerate(targets))
            if abs(expected - best.log_prob) < 1e-3:
                break
        else:
            raise AssertionError(f"score {best.log_prob} is not the model's {expected}")
