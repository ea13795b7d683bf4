"""Lexically constrained beam search: target phrases that must appear in a translation (glossary terms).

Dynamic beam allocation (Post & Vilar 2018), in the form of Hu et al. (2019): at every step each hypothesis
may continue with its best tokens (as in plain beam search), with the next token of the constraint it is in
the middle of, or with the first token of a constraint it has not met yet. Candidates are put in *banks* by
how many constraint tokens they have met, and the beam is filled by taking the best candidate of the fullest
bank, then the best of the next bank, and so on round the banks, so hypotheses that have met more constraints
always keep a share of the beam without crowding out the fluent ones that will meet them later, at the place
the model finds most likely. A hypothesis may end (eos) only when it has met every constraint.

A constraint is met once its tokens appear in a row (all constraints are followed at once, so overlapping ones
are met by one output that holds them all). A term is a whole word: given the pieces that continue the
word before them (``continuations``: SentencePiece pieces without the word-start mark that start with a letter
or digit), none of them may follow a term just met ("Haus" must not become "Hauses", which holds no "Haus").

Everything here is per candidate, in Python: it runs only for batches with constraints (``beam_search``
takes its plain tensor path otherwise), and with no constraint it picks exactly the candidates plain beam
search picks (a test holds the two to the same outputs).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..data.tokenizer import EOS_ID

NEG_INF = float("-inf")


@dataclass(frozen=True)
class ConstraintState:
    """Where one hypothesis stands: the constraints met (a bit each) and its last tokens (as many as the longest
    constraint has, less one: all that can be the beginning of a constraint not met yet)."""

    met: int = 0
    recent: tuple[int, ...] = ()
    term_ended: bool = False  # a constraint was met with the last token: no piece may glue onto it


START = ConstraintState()


class SentenceConstraints:
    """One sentence's constraints (each a list of target token ids) and how a token moves a state on.

    Every constraint is followed at once, as a string search follows several patterns: a token can go on with one
    constraint, start another and complete a third ("a b" holds both "a b" and "b"), so constraints that share or
    overlap tokens are all met by one output that holds them."""

    def __init__(self, phrases: list[list[int]]):
        self.phrases = [tuple(p) for p in phrases if p]
        self.all_met = (1 << len(self.phrases)) - 1
        self.total_tokens = sum(len(p) for p in self.phrases)
        self.keep = max((len(p) for p in self.phrases), default=1) - 1
        self._banks: dict[ConstraintState, int] = {}

    def _progress(self, state: ConstraintState, phrase: tuple[int, ...]) -> int:
        """How many of ``phrase``'s first tokens the hypothesis ends with."""
        recent = state.recent
        for k in range(min(len(phrase) - 1, len(recent)), 0, -1):
            if recent[-k:] == phrase[:k]:
                return k
        return 0

    def _unmet(self, state: ConstraintState):
        return (phrase for j, phrase in enumerate(self.phrases) if not state.met >> j & 1)

    def tokens_met(self, state: ConstraintState) -> int:
        """The state's bank: tokens of the constraints met, plus those of the one furthest under way."""
        bank = self._banks.get(state)
        if bank is None:
            met = sum(len(p) for j, p in enumerate(self.phrases) if state.met >> j & 1)
            bank = self._banks[state] = met + max((self._progress(state, p) for p in self._unmet(state)), default=0)
        return bank

    def done(self, state: ConstraintState) -> bool:
        return state.met == self.all_met

    def next_tokens(self, state: ConstraintState) -> dict[int, bool]:
        """The tokens that advance ``state`` (each unmet constraint's next one, and its first), each with whether
        it goes on with a constraint under way rather than starting one."""
        wanted: dict[int, bool] = {}
        for phrase in self._unmet(state):
            progress = self._progress(state, phrase)
            if progress:
                wanted[phrase[progress]] = True
            wanted.setdefault(phrase[0], False)
        return wanted

    def still_needed(self, state: ConstraintState) -> int:
        """Tokens the hypothesis needs at least to meet every constraint (going on with the furthest one)."""
        return self.total_tokens - self.tokens_met(state)

    def forced_token(self, state: ConstraintState) -> int:
        """The next token of the unmet constraint furthest under way (the first unmet one on a tie)."""
        phrase = max(self._unmet(state), key=lambda p: self._progress(state, p))
        return phrase[self._progress(state, phrase)]

    def advance(self, state: ConstraintState, token: int) -> ConstraintState:
        window = state.recent + (token,)
        met = state.met
        for j, phrase in enumerate(self.phrases):
            if not met >> j & 1 and window[-len(phrase):] == phrase:
                met |= 1 << j
        return ConstraintState(met, window[-self.keep:] if self.keep else (), met != state.met)


@dataclass
class Selection:
    """One step's choice for the active sentences, in beam_search's terms: the candidates that end now
    (row, beam, score, whether they met every constraint), whether each sentence's best candidate ends, and the
    next beams (scores, the beam each continues, its token), ``beams`` per sentence (dead ones at -inf)."""

    ended: list[tuple[int, int, float]]
    best_ended: list[bool]
    scores: torch.Tensor
    beam: torch.Tensor
    token: torch.Tensor
    beams: int


class ConstraintTracker:
    """The constraint states of every beam of the active sentences, kept in step with beam_search's rows."""

    def __init__(self, constraints: list[list[list[int]]], continuations: torch.Tensor | None = None):
        self.sentences = [SentenceConstraints(c) for c in constraints]
        self.states: list[list[ConstraintState]] = [[START] for _ in constraints]
        self.continuations = continuations  # (V,) bool, or None: any piece may follow a term

    def extra_length(self) -> list[int]:
        """Tokens each sentence's constraints add at most (its length limit grows by them)."""
        return [s.total_tokens for s in self.sentences]

    def done(self, row: int, beam: int) -> bool:
        return self.sentences[row].done(self.states[row][beam])

    def keep(self, rows: list[int]) -> None:
        """Only these active sentences go on (the others are done)."""
        self.sentences = [self.sentences[r] for r in rows]
        self.states = [self.states[r] for r in rows]

    def _restrict(self, candidates: torch.Tensor, vocab: int, steps_left: list[int]) -> None:
        """What constraints rule out, in ``candidates``: an end before every constraint is met, anything but the
        constraints with only just room left, a piece glued onto a term just met."""
        for row, states in enumerate(self.states):
            sentence = self.sentences[row]
            for beam, state in enumerate(states):
                own = slice(beam * vocab, (beam + 1) * vocab)
                if not sentence.done(state):
                    candidates[row, beam * vocab + EOS_ID] = NEG_INF
                    if steps_left[row] <= sentence.still_needed(state):
                        # Only just room left (the limit grew by the constraints' tokens): the hypothesis goes on
                        # with its constraints, so that even a beam too narrow for its banks ends with them all.
                        forced = beam * vocab + sentence.forced_token(state)
                        keep = candidates[row, forced].item()
                        candidates[row, own] = NEG_INF
                        candidates[row, forced] = keep
                if state.term_ended and self.continuations is not None:  # the term stays a word of its own
                    candidates[row, own].masked_fill_(self.continuations, NEG_INF)

    def select(self, candidates: torch.Tensor, vocab: int, k: int, steps_left: list[int],
               unbanned: torch.Tensor | None = None) -> Selection:
        """Choose the next beams from ``candidates`` (sentences, beams * vocab): each hypothesis's score plus
        each token's log-probability. ``steps_left``: per sentence, the tokens its length limit still allows
        (this one included). ``unbanned``: the same scores before a repetition ban (no_repeat_ngram_size), read
        for the tokens that advance a constraint (a term may repeat a word). Modifies both (eos of hypotheses
        with constraints unmet, ...)."""
        num_active, width_all = candidates.shape
        beams = width_all // vocab
        self._restrict(candidates, vocab, steps_left)
        if unbanned is not None:
            self._restrict(unbanned, vocab, steps_left)
        width = min(2 * k, width_all)
        new_beams = min(k, width - beams)  # as plain beam search: at most `beams` candidates end in eos
        top_scores, top_index = candidates.topk(width, dim=1)
        # The candidates that advance a constraint, wherever they rank: their scores in one gather. A term may
        # repeat a word, so a token that goes on with a term under way (or the one a hypothesis short of room
        # must take, or any term's token for a hypothesis the ban leaves nothing else) reads its score without
        # the repetition ban; one that would only start a term does not (else a hypothesis could repeat a
        # term's first word again and again).
        stuck = ([[False] * beams] * num_active if unbanned is None else
                 (~torch.isfinite(candidates.view(num_active, beams, vocab)).any(-1)).tolist())
        extra: list[tuple[int, int, bool]] = []  # (row, flat index, exempt from the repetition ban)
        for row, states in enumerate(self.states):
            sentence = self.sentences[row]
            if not sentence.phrases:
                continue
            for beam, state in enumerate(states):
                short_of_room = not sentence.done(state) and steps_left[row] <= sentence.still_needed(state)
                forced = sentence.forced_token(state) if short_of_room else None
                extra.extend((row, beam * vocab + token, going_on or token == forced or stuck[row][beam])
                             for token, going_on in sentence.next_tokens(state).items())
        extra_scores = []
        if extra:
            rows, indices = [r for r, _, _ in extra], [i for _, i, _ in extra]
            extra_scores = candidates[rows, indices].tolist()
            if unbanned is not None:
                extra_scores = [free if exempt else banned for banned, free, (_, _, exempt)
                                in zip(extra_scores, unbanned[rows, indices].tolist(), extra)]
        top_scores_cpu, top_index_cpu = top_scores.tolist(), top_index.tolist()

        per_row_extra: list[list[tuple[int, float]]] = [[] for _ in range(num_active)]
        for (row, index, _), score in zip(extra, extra_scores):
            per_row_extra[row].append((index, score))
        ended: list[tuple[int, int, float]] = []
        best_ended: list[bool] = []
        next_scores = [[NEG_INF] * new_beams for _ in range(num_active)]
        next_beam = [[0] * new_beams for _ in range(num_active)]
        next_token = [[EOS_ID + 1] * new_beams for _ in range(num_active)]  # dead beams: any token, score -inf
        new_states: list[list[ConstraintState]] = []
        for row in range(num_active):
            sentence, states = self.sentences[row], self.states[row]
            pool = dict(zip(top_index_cpu[row], top_scores_cpu[row]))  # (insertion order: topk's)
            for index, score in per_row_extra[row]:
                if score > pool.get(index, NEG_INF):  # not in the top, or banned there and not as a term's token
                    pool[index] = score
            pool = list(pool.items())
            # Banks: fullest first; within a bank, best first (stable: ties keep topk's order).
            banked: dict[int, list[tuple[int, float, ConstraintState]]] = {}
            for index, score in pool:
                beam, token = divmod(index, vocab)
                state = sentence.advance(states[beam], token) if sentence.phrases else START
                banked.setdefault(sentence.tokens_met(state), []).append((index, score, state))
            for members in banked.values():
                members.sort(key=lambda member: -member[1])
            order = [member for rank in range(max(len(m) for m in banked.values()))
                     for bank in sorted(banked, reverse=True) if rank < len(banked[bank])
                     for member in [banked[bank][rank]]]
            first_index, first_score, _ = order[0]
            best_ended.append(first_index % vocab == EOS_ID and first_score > NEG_INF)
            chosen_states: list[ConstraintState] = []
            for position, (index, score, state) in enumerate(order):
                beam, token = divmod(index, vocab)
                if token == EOS_ID:
                    if position < k and score > NEG_INF:
                        ended.append((row, beam, score))
                    continue
                if len(chosen_states) < new_beams:
                    slot = len(chosen_states)
                    next_scores[row][slot], next_beam[row][slot], next_token[row][slot] = score, beam, token
                    chosen_states.append(state)
            chosen_states += [START] * (new_beams - len(chosen_states))
            new_states.append(chosen_states)
        self.states = new_states
        device = candidates.device
        return Selection(ended, best_ended, torch.tensor(next_scores, device=device),
                         torch.tensor(next_beam, device=device), torch.tensor(next_token, device=device), new_beams)

    def reorder_for_length_limit(self, row: int, beams: int) -> list[int]:
        """The order in which a sentence's beams are finished at its length limit: those that met every
        constraint first (a translation without a term is the last resort), then as they stand."""
        return sorted(range(beams), key=lambda beam: not self.done(row, beam))
