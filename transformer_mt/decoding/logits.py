"""What search does to a decoding step's log-probabilities beyond taking them as they are.

- :class:`RepetitionControl`: ``no_repeat_ngram_size`` (a token that would complete an n-gram already in
  the hypothesis gets -inf, as fairseq's NGramRepeatBlock and CTranslate2's no_repeat_ngram_size) and
  ``repetition_penalty`` (the log-probability of a token already in the hypothesis is multiplied by the
  penalty, so its probability p becomes p ** penalty: 1 is off, above 1 discourages repeats).
  CTranslate2 and Hugging Face apply their penalty to the logits (divided when positive, multiplied when
  negative); on log-probabilities it means the same whatever the logits' offset, and applies as it is to
  an ensemble's combined log-probabilities.
- :class:`Sampler`: draws the next token from the distribution, with ``temperature`` (0 = the most
  probable token, greedy), ``top_k`` (0 = no limit) and ``top_p`` (nucleus: the fewest most probable
  tokens whose probability adds up to at least p; 1 = no limit), from a seeded ``torch.Generator``.
- :func:`force_prefix`: a target prefix, forced at the first steps: every other token gets -inf and the
  prefix token keeps its log-probability, so scores accumulate as if the model had chosen it.

Search asks for any of them only when it is on: with every option off, its loop is what it was.
Scores of hypotheses are sums of the log-probabilities after the repetition control (what beam search
ranked), before temperature and the top-k/top-p filter (which only shape what is drawn).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import TransformerMTError

NEG_INF = float("-inf")
# Temperature, top-p and the repetition penalty scale float32 log-probabilities (or are compared with float32
# probabilities): between these bounds every finite log-probability stays finite or becomes -inf, and none
# becomes NaN (beyond them float32 rounds the value to 0 or infinity: 1e-300 is 0, 1e300 inf). No value
# outside them means anything more: 1e-30 is already greedy, 1e30 already uniform.
SCALE_MIN, SCALE_MAX = 1e-30, 1e30
MAX_SEED = 2**63 - 1  # a signed 64-bit integer (torch.Generator itself takes up to 2**64 - 1)


@dataclass(frozen=True)
class RepetitionControl:
    no_repeat_ngram_size: int = 0
    repetition_penalty: float = 1.0

    @property
    def enabled(self) -> bool:
        return self.no_repeat_ngram_size > 0 or self.repetition_penalty != 1.0

    def __call__(self, log_probs: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """``log_probs`` (rows, V) of the next token after ``tokens`` (rows, t): the hypotheses so far,
        without the start token. Returns the adjusted log-probabilities (a new tensor, or ``log_probs`` itself
        when nothing applies yet)."""
        return self.penalized_and_banned(log_probs, tokens)[1]

    def penalized_and_banned(self, log_probs: torch.Tensor, tokens: torch.Tensor
                             ) -> tuple[torch.Tensor, torch.Tensor]:
        """The log-probabilities with the repetition penalty only, and with the n-gram ban too (the same tensor
        when nothing is banned yet): constrained search lets a term's own words through the ban."""
        if tokens.size(1) == 0:
            return log_probs, log_probs
        if self.repetition_penalty != 1.0:
            seen = torch.zeros_like(log_probs, dtype=torch.bool).scatter_(1, tokens, True)
            log_probs = torch.where(seen, log_probs * self.repetition_penalty, log_probs)
        penalized = log_probs
        n = self.no_repeat_ngram_size
        if n > 0 and tokens.size(1) >= n - 1:
            log_probs = block_repeated_ngrams(log_probs, tokens, n)
        return penalized, log_probs


def block_repeated_ngrams(log_probs: torch.Tensor, tokens: torch.Tensor, n: int) -> torch.Tensor:
    """-inf for every token that would end an n-gram (of ``n`` tokens) that ``tokens`` already holds.

    The n-grams of each row are compared with its last n - 1 tokens all at once (no loop over rows):
    where an n-gram starts with them, its last token is banned."""
    if tokens.size(1) < n:  # no complete n-gram yet
        return log_probs
    grams = tokens.unfold(1, n, 1)  # (rows, t - n + 1, n)
    last = tokens[:, tokens.size(1) - (n - 1):]  # (rows, n - 1)
    matches = (grams[:, :, :n - 1] == last.unsqueeze(1)).all(dim=2)  # (rows, t - n + 1)
    # Counting (scatter_add) rather than scattering booleans: several n-grams may end in the same token.
    banned = torch.zeros_like(log_probs, dtype=torch.int32).scatter_add_(1, grams[:, :, n - 1], matches.int())
    return log_probs.masked_fill(banned > 0, NEG_INF)


@dataclass
class Sampler:
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    generator: torch.Generator | None = None

    def choose(self, log_probs: torch.Tensor) -> torch.Tensor:
        """One token per row of ``log_probs`` (rows, V), drawn from the tempered and filtered distribution."""
        if self.temperature == 0.0:
            return log_probs.argmax(dim=-1)
        logits = log_probs / self.temperature if self.temperature != 1.0 else log_probs
        if 0 < self.top_k < logits.size(-1):
            kth = logits.topk(self.top_k, dim=-1).values[:, -1:]
            logits = logits.masked_fill(logits < kth, NEG_INF)  # ties with the k-th stay: never fewer than k
        if self.top_p < 1.0:
            ordered, order = logits.sort(dim=-1, descending=True)
            probs = ordered.softmax(dim=-1)
            # Drop a token when the more probable ones already add up to top_p; the most probable always stays.
            drop = (probs.cumsum(dim=-1) - probs) >= self.top_p
            logits = logits.masked_fill(drop.scatter(1, order, drop), NEG_INF)
        return torch.multinomial(logits.softmax(dim=-1), 1, generator=self.generator).squeeze(1)


def force_prefix(log_probs: torch.Tensor, forced: torch.Tensor, model_log_probs: torch.Tensor | None = None
                 ) -> torch.Tensor:
    """``forced`` (rows,): the token each row must take now, or PAD_ID (0) for rows free to choose.
    Forced rows keep only that token's log-probability; every other token gets -inf.

    ``model_log_probs``: the model's own, before repetition control. The forced token's log-probability
    comes from them: the user asked for that token, so a prefix that repeats itself (which n-gram
    blocking would turn into -inf, leaving a row with no token at all) is still taken."""
    kept = (log_probs if model_log_probs is None else model_log_probs).gather(1, forced.unsqueeze(1))
    rows = forced != 0
    only = torch.full_like(log_probs, NEG_INF).scatter_(1, forced.unsqueeze(1), kept)
    return torch.where(rows.unsqueeze(1), only, log_probs)


@dataclass(frozen=True)
class SearchOptions:
    """The decoding options of issue 27, checked; all off (None / neutral) by default."""

    sampling: bool = False
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None
    no_repeat_ngram_size: int = 0
    repetition_penalty: float = 1.0

    @property
    def repetition(self) -> RepetitionControl | None:
        control = RepetitionControl(self.no_repeat_ngram_size, self.repetition_penalty)
        return control if control.enabled else None

    def sampler(self, device: torch.device) -> Sampler:
        """A Sampler with a generator of its own, seeded with ``seed`` (or randomly): the same seed, inputs and
        batch size give the same samples, whatever else the process draws."""
        generator = torch.Generator(device=device)
        if self.seed is None:
            generator.seed()
        else:
            generator.manual_seed(self.seed)
        return Sampler(self.temperature, self.top_k, self.top_p, generator)


def search_options(temperature: float | None = None, top_k: int | None = None, top_p: float | None = None,
                   seed: int | None = None, no_repeat_ngram_size: int | None = None,
                   repetition_penalty: float | None = None, decoding=None) -> SearchOptions:
    """translate()'s sampling and repetition arguments, checked, with a message that names the option.

    Sampling is on when any of ``temperature``, ``top_k``, ``top_p`` is given (not None); the others then
    take their neutral values (temperature 1, no top-k or top-p limit). ``no_repeat_ngram_size`` and
    ``repetition_penalty`` left out come from ``decoding`` (the run's DecodingConfig) when given."""
    if no_repeat_ngram_size is None:
        no_repeat_ngram_size = getattr(decoding, "no_repeat_ngram_size", 0)
    if repetition_penalty is None:
        repetition_penalty = getattr(decoding, "repetition_penalty", 1.0)
    sampling = temperature is not None or top_k is not None or top_p is not None
    checks = [
        ("temperature", temperature, lambda v: _number(v) and (v == 0 or SCALE_MIN <= v <= SCALE_MAX),
         f"0 (always the most probable token) or a number from {SCALE_MIN:g} to {SCALE_MAX:g} (1 = the model's "
         f"distribution)"),
        ("top_k", top_k, lambda v: _whole(v) and v >= 0, "a whole number >= 0 (0 = no limit, 1 = greedy)"),
        ("top_p", top_p, lambda v: _number(v) and SCALE_MIN <= v <= 1,
         f"a number from {SCALE_MIN:g} to 1 (1 = no limit)"),
        ("seed", seed, lambda v: _whole(v) and 0 <= v <= MAX_SEED, f"a whole number from 0 to {MAX_SEED} (2**63 - 1)"),
        ("no_repeat_ngram_size", no_repeat_ngram_size, lambda v: _whole(v) and v >= 0,
         "a whole number >= 0 (0 = off)"),
        ("repetition_penalty", repetition_penalty, lambda v: _number(v) and SCALE_MIN <= v <= SCALE_MAX,
         f"a number from {SCALE_MIN:g} to {SCALE_MAX:g} (1 = off, above 1 discourages repeated tokens)"),
    ]
    for name, value, valid, expected in checks:
        if value is not None and not valid(value):
            raise TransformerMTError(f"{name} (--{name.replace('_', '-')}) must be {expected}, got {value!r}")
    if seed is not None and not sampling:
        raise TransformerMTError("seed (--seed) seeds sampling: add temperature, top_k or top_p (e.g. --top-k 10), "
                                 "or leave the seed out")
    return SearchOptions(sampling=sampling, temperature=1.0 if temperature is None else float(temperature),
                         top_k=0 if top_k is None else int(top_k), top_p=1.0 if top_p is None else float(top_p),
                         seed=seed, no_repeat_ngram_size=int(no_repeat_ngram_size),
                         repetition_penalty=float(repetition_penalty))


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


_number, _whole = is_number, is_whole
