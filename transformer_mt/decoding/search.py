"""Greedy and beam search over a Transformer with incremental (cached) decoding.

Both start every hypothesis from the start token (bos) and stop it at the end
token (eos) or at the length limit ``max_length_a * source_length +
max_length_b``. Returned token lists contain neither bos nor eos.

Beam search keeps the beams of all sentences in one (sentences * beam) batch;
the beams of a sentence share its encoder output.
Each step scores beam_size * vocab continuations per sentence, keeps the
best 2 * beam_size, moves those ending in eos to the sentence's finished
list and continues with the best beam_size others (a beam wider than the
vocabulary allows starts with fewer beams and grows to beam_size). A
sentence is done once it has beam_size finished hypotheses or, with ``early_exit=True`` (the rule of
OpenNMT-py, JoeyNMT and CTranslate2: fewer steps, but lower BLEU on Multi30k),
once its best candidate of a step ends in eos; done sentences leave the batch (their
rows are dropped from the encoder output and the cache) so later steps only
pay for sentences still being decoded. Finished hypotheses are ranked by
score / ((5 + length) / 6) ** length_penalty (Wu et al. 2016).

``incremental=False`` turns the key/value cache off: every step runs the
decoder over the whole prefix again. It is slow and exists as the reference
that the cached search must match exactly (tests, scripts/benchmark.py).

``return_attention=True`` (and ``return_self_attention=True``) also return the
attention weights each output token was predicted with (attention plots, word
alignments); they follow the beams as the cache does. Without the flags no
weights are computed or kept. ``attention_layer=L`` keeps only decoder layer L's
cross-attention, averaged over its heads: all that alignments need, and a
fraction of the memory of every layer's and head's weights for every beam.

Options of logits.py, each applied only when on (with all of them off the loops are the plain ones):
``repetition`` (no-repeat n-grams, repetition penalty) and ``prefix`` (target prefixes, forced at the first
steps) for beam search and sampling; ``sample_search`` draws each token (temperature, top-k, top-p) instead
of searching, ``num_samples`` independent rows per sentence. ``model`` may be an ``Ensemble``
(ensemble.py): it encodes, steps and reorders its caches like one model.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F

from ..data.tokenizer import BOS_ID, EOS_ID, PAD_ID
from ..model import Transformer
from .constraints import ConstraintTracker, Selection
from .logits import RepetitionControl, Sampler, force_prefix

NEVER_GENERATED = [PAD_ID, BOS_ID]


@dataclass
class Hypothesis:
    tokens: list[int]
    score: float  # length-normalised log-probability
    log_prob: float
    # Only with return_attention / return_self_attention: see AttentionHistory.of_row.
    attention: dict[str, torch.Tensor] | None = None
    # Constrained search: False for a hypothesis cut at the length limit before it met every constraint
    # (ranked after those that did).
    constraints_met: bool = True


class AttentionHistory:
    """The attention weights of every decoding step of each decoder row, kept only when asked for.

    Per kind ("cross", "self") one tensor (rows, layers, heads, steps, keys). Search calls
    ``select`` whenever it reorders or drops rows (beams, finished sentences), as it does for the
    key/value cache, so each row's history is that of the hypothesis the row now holds. Earlier
    steps' self-attention rows are zero-padded to the newest step's number of keys.
    """

    def __init__(self, src_tokens: torch.Tensor, pad_id: int):
        self.source_lengths = (src_tokens != pad_id).sum(dim=1).tolist()
        self.weights: dict[str, torch.Tensor] = {}

    def append(self, step_attention: dict[str, torch.Tensor]) -> None:
        for kind, step in step_attention.items():
            history = self.weights.get(kind)
            if history is not None:
                if step.size(-1) > history.size(-1):  # self-attention: one more key each step
                    history = F.pad(history, (0, step.size(-1) - history.size(-1)))
                step = torch.cat([history, step], dim=3)
            self.weights[kind] = step

    def select(self, rows: torch.Tensor) -> None:
        self.weights = {kind: weights.index_select(0, rows) for kind, weights in self.weights.items()}

    def of_row(self, row: int, sentence: int) -> dict[str, torch.Tensor]:
        """Row ``row``'s weights, of original sentence ``sentence``: "cross" (layers, heads, steps,
        source length without padding), "self" (layers, heads, steps, steps). Step t is the step
        that produced output token t (the last one may be the end token)."""
        return {kind: (weights[row, ..., :self.source_lengths[sentence]] if kind == "cross" else weights[row]).clone()
                for kind, weights in self.weights.items()}


def length_limits(src_tokens: torch.Tensor, pad_id: int, a: float, b: int,
                  prefix: torch.Tensor | None = None) -> torch.Tensor:
    """Output tokens per sentence at most; a target prefix (its tokens count) always fits whole."""
    src_lengths = (src_tokens != pad_id).sum(dim=1)
    limits = (src_lengths.float() * a + b).long().clamp(min=1)
    return limits if prefix is None else torch.maximum(limits, (prefix != PAD_ID).sum(dim=1))


def step_function(model, normalized: bool = True):
    """``step_log_probs`` bound to ``model``, or an Ensemble's own step (it combines its members'), chosen
    once per search rather than at every step. ``normalized=False`` (greedy search, which needs only the
    best token): one model's ``step_logits``, without the log-softmax over the vocabulary (~7% of a step
    on CPU); an Ensemble still averages its members' log-probabilities."""
    own = getattr(model, "step_log_probs", None)
    if own is not None:
        return own
    return partial(step_log_probs if normalized else step_logits, model)


def step_log_probs(model: Transformer, prev_tokens, memory, src_mask, cache,
                   return_attention: bool = False, return_self_attention: bool = False,
                   attention_layer: int | None = None):
    """Log-probabilities (N, V) of the next token after ``prev_tokens``: ``step_logits`` normalised.

    With a cache ``prev_tokens`` is the newest token of each row; without one, the whole prefix.
    Padding and the start token are never valid outputs, so they get -inf. With either flag,
    returns ``(log_probs, step_attention)``: the newest position's attention weights, per kind
    (N, layers, heads, 1, keys); with ``attention_layer`` (from 1) the cross-attention is that
    layer's alone, averaged over the heads: (N, 1, 1, 1, keys).
    """
    scores = step_logits(model, prev_tokens, memory, src_mask, cache, return_attention, return_self_attention,
                         attention_layer)
    if isinstance(scores, tuple):
        return torch.log_softmax(scores[0], dim=-1), scores[1]
    return torch.log_softmax(scores, dim=-1)


def step_logits(model: Transformer, prev_tokens, memory, src_mask, cache,
                return_attention: bool = False, return_self_attention: bool = False,
                attention_layer: int | None = None):
    """The output layer's scores (N, V) for the next token, before the softmax (pad and start token -inf);
    arguments and the attention weights as for ``step_log_probs``."""
    step_attention = None
    if return_attention or return_self_attention:
        hidden, attention = model.decode(prev_tokens, memory, src_mask, cache, return_attention,
                                         return_self_attention)
        if return_attention and attention_layer is not None:
            attention["cross"] = [attention["cross"][attention_layer - 1].mean(dim=1, keepdim=True)]
        step_attention = {kind: torch.stack([weights[:, :, -1:] for weights in layers], dim=1).float()
                          for kind, layers in attention.items()}
    else:
        hidden = model.decode(prev_tokens, memory, src_mask, cache)
    logits = model.generator(hidden[:, -1]).float()
    logits[:, NEVER_GENERATED] = float("-inf")
    return logits if step_attention is None else (logits, step_attention)


@torch.inference_mode()
def greedy_search(model: Transformer, src_tokens: torch.Tensor, max_length_a: float = 1.5,
                  max_length_b: int = 10, incremental: bool = True, return_attention: bool = False,
                  return_self_attention: bool = False, attention_layer: int | None = None):
    """The output tokens of each source sentence; with either attention flag ``(outputs, attentions)``,
    ``attentions[i]`` the weights sentence i's tokens were predicted with (see AttentionHistory.of_row)."""
    model.eval()
    batch = src_tokens.size(0)
    device = src_tokens.device
    memory, src_mask = model.encode(src_tokens)
    max_lens = length_limits(src_tokens, model.pad_id, max_length_a, max_length_b)
    cache = model.new_cache() if incremental else None
    prev = torch.full((batch, 1), BOS_ID, dtype=torch.long, device=device)  # without a cache: the whole prefix
    outputs: list[list[int]] = [[] for _ in range(batch)]
    active = torch.arange(batch, device=device)  # original row of each active row
    history = AttentionHistory(src_tokens, model.pad_id) if return_attention or return_self_attention else None
    attentions: list[dict | None] = [None] * batch
    step = step_function(model, normalized=False)  # the most probable token is the highest score
    for _ in range(int(max_lens.max())):
        if history is None:
            next_tokens = step(prev, memory, src_mask, cache).argmax(dim=-1)
        else:
            scores, step_attention = step(prev, memory, src_mask, cache, return_attention,
                                          return_self_attention, attention_layer)
            next_tokens = scores.argmax(dim=-1)
            history.append(step_attention)
        tokens_cpu = next_tokens.tolist()
        keep = []
        for row, (orig, token) in enumerate(zip(active.tolist(), tokens_cpu)):
            if token != EOS_ID:
                outputs[orig].append(token)
                if len(outputs[orig]) < int(max_lens[orig]):
                    keep.append(row)
                    continue
            if history is not None:  # the sentence ends at this step
                attentions[orig] = history.of_row(row, orig)
        if not keep:
            break
        if len(keep) < len(tokens_cpu):
            index = torch.tensor(keep, device=device)
            active, memory, src_mask = active[index], memory[index], src_mask[index]
            next_tokens = next_tokens[index]
            if incremental:
                cache = model.reorder_cache(cache, index, index)
            else:
                prev = prev[index]
            if history is not None:
                history.select(index)
        prev = next_tokens.unsqueeze(1) if incremental else torch.cat([prev, next_tokens.unsqueeze(1)], dim=1)
    return outputs if history is None else (outputs, attentions)


def select_candidates(candidates: torch.Tensor, vocab: int, k: int, early_exit: bool) -> Selection:
    """Plain beam search's step: from ``candidates`` (sentences, beams * vocab) the hypotheses that end now among
    each sentence's best k, and the best k that go on (constraints.py's tracker chooses otherwise)."""
    beams = candidates.size(1) // vocab
    # 2k candidates hold at least k that do not end in eos (each beam has one eos), but a beam
    # larger than the vocabulary has fewer candidates than that at the first steps: then take
    # all of them and continue with fewer beams (the beam count grows back to k as it widens).
    width = min(2 * k, beams * vocab)
    top_scores, top_index = candidates.topk(width, dim=1)  # (A, width)
    top_beam, top_token = top_index // vocab, top_index % vocab
    is_eos = top_token == EOS_ID
    # Hypotheses ending now (only those among a sentence's best k can matter).
    eos_rows, eos_cols = torch.nonzero(is_eos[:, :k] & torch.isfinite(top_scores[:, :k]), as_tuple=True)
    ended = list(zip(eos_rows.tolist(), top_beam[eos_rows, eos_cols].tolist(),
                     top_scores[eos_rows, eos_cols].tolist())) if len(eos_rows) else []
    # early_exit: a sentence whose best candidate ends now is done (that candidate is kept by the caller).
    best_ended = (is_eos[:, 0] & torch.isfinite(top_scores[:, 0])).tolist() if early_exit else None
    # Continue with the best k candidates that do not end in eos (stable sort keeps score order).
    new_beams = min(k, width - beams)  # at most `beams` of the candidates end in eos
    order = torch.sort(is_eos.to(torch.int8), dim=1, stable=True).indices[:, :new_beams]
    return Selection(ended, best_ended, top_scores.gather(1, order), top_beam.gather(1, order),
                     top_token.gather(1, order), new_beams)


@torch.inference_mode()
def beam_search(model: Transformer, src_tokens: torch.Tensor, beam_size: int = 5, length_penalty: float = 1.0,
                max_length_a: float = 1.5, max_length_b: int = 10, nbest: int = 1,
                incremental: bool = True, early_exit: bool = False, return_attention: bool = False,
                return_self_attention: bool = False, attention_layer: int | None = None,
                repetition: RepetitionControl | None = None,
                prefix: torch.Tensor | None = None,
                constraints: list[list[list[int]]] | None = None,
                continuations: torch.Tensor | None = None) -> list[list[Hypothesis]]:
    """Return, for each source sentence, its ``nbest`` best hypotheses, best first (with either
    attention flag each with its ``attention``).

    ``repetition``: no-repeat n-grams / repetition penalty (logits.py). ``prefix`` (sentences, P): the
    tokens each sentence's translation starts with, padded with PAD_ID; the beams follow it (scores
    accumulate its log-probabilities) and branch out after it. An empty prefix is no prefix.
    ``constraints``: per sentence, the target phrases (token ids) its translation must hold (constraints.py:
    dynamic beam allocation); a sentence's length limit grows by their tokens; ``continuations`` (V,) marks
    the pieces that may not follow a phrase (they would glue a word onto it). None, or no phrase in the
    batch: the plain search."""
    model.eval()
    num_sentences = src_tokens.size(0)
    device = src_tokens.device
    k = beam_size
    step_lprobs = step_function(model)
    memory, src_mask = model.encode(src_tokens)
    max_lens = length_limits(src_tokens, model.pad_id, max_length_a, max_length_b, prefix).tolist()
    prefix_steps = 0 if prefix is None else prefix.size(1)
    tracker = (ConstraintTracker(constraints, continuations) if constraints is not None and any(constraints)
               else None)
    if tracker is not None:
        max_lens = [limit + extra for limit, extra in zip(max_lens, tracker.extra_length())]

    # Rows of the decoder batch are sentence-major: rows s*beams .. s*beams+beams-1 belong to active
    # sentence s, and all of a sentence's beams share its one row of `memory` (see the model's
    # cross-attention). Every hypothesis starts as the start token alone, so step 0 decodes one row
    # per sentence; its best k continuations then become the k beams.
    beams = 1
    cache = model.new_cache() if incremental else None
    prev = torch.full((num_sentences, 1), BOS_ID, dtype=torch.long, device=device)
    scores = torch.zeros((num_sentences, 1), device=device)
    tokens = torch.empty((num_sentences, 1, 0), dtype=torch.long, device=device)
    finished: list[list[Hypothesis]] = [[] for _ in range(num_sentences)]
    active = list(range(num_sentences))  # original index of each active sentence
    history = AttentionHistory(src_tokens, model.pad_id) if return_attention or return_self_attention else None

    def normalise(log_prob: float, length: int) -> float:
        return log_prob / (((5.0 + length) / 6.0) ** length_penalty)

    for step in range(max(max_lens)):
        num_active = len(active)
        if history is None:
            lprobs = step_lprobs(prev, memory, src_mask, cache)  # (A*beams, V)
        else:
            lprobs, step_attention = step_lprobs(prev, memory, src_mask, cache, return_attention,
                                                 return_self_attention, attention_layer)
            history.append(step_attention)
        model_lprobs = penalized = lprobs
        if repetition is not None:
            penalized, lprobs = repetition.penalized_and_banned(lprobs, tokens.reshape(num_active * beams, step))
        if step < prefix_steps:
            # While a sentence's prefix lasts, its one finite beam is the prefix (the others stay at -inf).
            lprobs = force_prefix(lprobs, prefix[:, step].repeat_interleave(beams), model_lprobs)
        vocab = lprobs.size(-1)
        candidates = lprobs.view(num_active, beams, vocab).add_(scores.unsqueeze(-1)).view(num_active, beams * vocab)
        if tracker is None:
            chosen = select_candidates(candidates, vocab, k, early_exit)
        else:
            # A term may repeat a word: the tokens that advance a constraint are exempt from the n-gram ban (the
            # tracker reads their scores without it, the repetition penalty kept), or no_repeat_ngram_size could
            # leave no hypothesis. (``penalized`` is another tensor than ``lprobs`` only where a ban applies;
            # ``lprobs`` has the scores added in place above.)
            unbanned = None
            if penalized is not lprobs and step >= prefix_steps:
                unbanned = (penalized.view(num_active, beams, vocab) + scores.unsqueeze(-1)).view(num_active, -1)
            chosen = tracker.select(candidates, vocab, k, [max_lens[sentence] - step for sentence in active],
                                    unbanned)
        ended, top_ended, new_beams = chosen.ended, chosen.best_ended, chosen.beams
        next_scores, next_beam, next_token = chosen.scores, chosen.beam, chosen.token
        for row, beam, score in ended:
            sentence = active[row]
            if len(finished[sentence]) < k:
                hyp_tokens = tokens[row, beam].tolist()
                attention = None if history is None else history.of_row(row * beams + beam, sentence)
                finished[sentence].append(Hypothesis(hyp_tokens, normalise(score, len(hyp_tokens) + 1), score,
                                                     attention))

        row_base = (torch.arange(num_active, device=device) * beams).unsqueeze(1)
        source_rows = (row_base + next_beam).view(-1)  # the row each new beam continues
        tokens = torch.cat([tokens.reshape(num_active * beams, step)[source_rows].view(num_active, new_beams, step),
                            next_token.unsqueeze(-1)], dim=2)
        scores = next_scores
        beams = new_beams
        if history is not None:
            history.select(source_rows)

        # Sentences that are done: k finished hypotheses, or the length limit reached.
        keep_sentences = []
        length_now = step + 1
        scores_cpu = scores.tolist() if any(length_now >= max_lens[s] for s in active) else None
        for row, sentence in enumerate(active):
            if len(finished[sentence]) >= k or (early_exit and top_ended[row] and len(finished[sentence]) >= nbest):
                continue
            if length_now >= max_lens[sentence]:
                for beam in range(beams) if tracker is None else tracker.reorder_for_length_limit(row, beams):
                    if len(finished[sentence]) >= k:
                        break
                    log_prob = scores_cpu[row][beam]
                    if log_prob == float("-inf"):
                        continue
                    hyp_tokens = tokens[row, beam].tolist()
                    attention = None if history is None else history.of_row(row * beams + beam, sentence)
                    finished[sentence].append(Hypothesis(hyp_tokens, normalise(log_prob, len(hyp_tokens)), log_prob,
                                                         attention, tracker is None or tracker.done(row, beam)))
                continue
            keep_sentences.append(row)
        if not keep_sentences:
            break
        keep = None
        if len(keep_sentences) < num_active:
            keep = torch.tensor(keep_sentences, device=device)
            if tracker is not None:
                tracker.keep(keep_sentences)
            active = [active[row] for row in keep_sentences]
            scores, tokens = scores[keep], tokens[keep]
            source_rows = source_rows.view(num_active, beams)[keep].view(-1)
            memory, src_mask = memory[keep], src_mask[keep]
            if prefix is not None:
                prefix = prefix[keep]
            if history is not None:  # already follows the beams (select above): drop the done sentences' rows
                history.select((keep.unsqueeze(1) * beams + torch.arange(beams, device=device)).view(-1))
        if incremental:
            cache = model.reorder_cache(cache, source_rows, keep)
            prev = tokens[:, :, -1].reshape(-1, 1)
        else:  # the whole prefix: start token + the tokens so far
            start = torch.full((tokens.size(0) * beams, 1), BOS_ID, dtype=torch.long, device=device)
            prev = torch.cat([start, tokens.reshape(-1, length_now)], dim=1)

    results = []
    for hyps in finished:
        hyps = sorted(hyps, key=lambda h: (h.constraints_met, h.score), reverse=True)
        results.append(hyps[:nbest])
    return results


@torch.inference_mode()
def sample_search(model: Transformer, src_tokens: torch.Tensor, sampler: Sampler, num_samples: int = 1,
                  length_penalty: float = 1.0, max_length_a: float = 1.5, max_length_b: int = 10,
                  repetition: RepetitionControl | None = None,
                  prefix: torch.Tensor | None = None) -> list[list[Hypothesis]]:
    """Draw ``num_samples`` translations of each source sentence, token by token from the model's
    distribution as ``sampler`` shapes it (temperature, top-k, top-p; logits.py); each sentence's samples
    best first by the score beam search ranks by (the model's log-probability, length-normalised).

    The samples of a sentence are independent rows of the batch, each with its own copy of the sentence's
    encoder output, so that each leaves the batch when it ends. ``sampler``'s generator draws for the
    rows still active at each step: the same seed, sources and batch give the same samples.
    ``repetition`` and ``prefix`` as for :func:`beam_search`."""
    model.eval()
    num_sentences = src_tokens.size(0)
    device = src_tokens.device
    step_lprobs = step_function(model)
    memory, src_mask = model.encode(src_tokens)
    max_lens = length_limits(src_tokens, model.pad_id, max_length_a, max_length_b, prefix)
    if num_samples > 1:
        copies = torch.arange(num_sentences, device=device).repeat_interleave(num_samples)
        memory, src_mask, max_lens = memory[copies], src_mask[copies], max_lens[copies]
        prefix = None if prefix is None else prefix[copies]
    num_rows = num_sentences * num_samples
    prefix_steps = 0 if prefix is None else prefix.size(1)
    cache = model.new_cache()
    prev = torch.full((num_rows, 1), BOS_ID, dtype=torch.long, device=device)
    tokens = torch.empty((num_rows, 0), dtype=torch.long, device=device)
    log_probs = torch.zeros(num_rows, device=device)
    active = torch.arange(num_rows, device=device)  # original row of each active row
    samples: list[Hypothesis | None] = [None] * num_rows

    for step in range(int(max_lens.max())):
        lprobs = step_lprobs(prev, memory, src_mask, cache)
        model_lprobs = lprobs
        if repetition is not None:
            lprobs = repetition(lprobs, tokens)
        if step < prefix_steps:
            lprobs = force_prefix(lprobs, prefix[:, step], model_lprobs)
        next_tokens = sampler.choose(lprobs)
        log_probs = log_probs + lprobs.gather(1, next_tokens.unsqueeze(1)).squeeze(1)
        tokens = torch.cat([tokens, next_tokens.unsqueeze(1)], dim=1)
        ended = (next_tokens == EOS_ID) | (max_lens <= step + 1)
        ended_rows = torch.nonzero(ended).view(-1).tolist()
        if ended_rows:
            for row, orig, log_prob in zip(ended_rows, active[ended_rows].tolist(), log_probs[ended_rows].tolist()):
                sample = tokens[row].tolist()
                length = len(sample)  # the end token counts in the length normalisation, as in beam search
                if sample[-1] == EOS_ID:
                    sample.pop()
                samples[orig] = Hypothesis(sample, log_prob / (((5.0 + length) / 6.0) ** length_penalty), log_prob)
            if len(ended_rows) == len(active):
                break
            keep = torch.nonzero(~ended).view(-1)
            active, tokens, log_probs, max_lens = active[keep], tokens[keep], log_probs[keep], max_lens[keep]
            memory, src_mask = memory[keep], src_mask[keep]
            prefix = None if prefix is None else prefix[keep]
            next_tokens = next_tokens[keep]
            cache = model.reorder_cache(cache, keep, keep)
        prev = next_tokens.unsqueeze(1)

    return [sorted(samples[s * num_samples:(s + 1) * num_samples], key=lambda h: h.score, reverse=True)
            for s in range(num_sentences)]
