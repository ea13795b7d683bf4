"""Several trained models decoding as one (``translate --model A --model B``).

An :class:`Ensemble` looks like one Transformer to search.py: ``encode`` runs every member's encoder,
``step_log_probs`` runs every member's decoder step (each on its own key/value cache) and combines their
log-probabilities, ``reorder_cache`` follows beams and finished sentences in every member's cache.

The combination is the mean of the members' log-probabilities (a geometric mean of their distributions,
not renormalised), as OpenNMT-py and Marian combine; fairseq averages probabilities instead
(logsumexp - log n). The mean of log-probabilities was chosen because a hypothesis's score is then the
mean of its scores under the members (the sum over steps of a mean is the mean of the sums), a token one
member rules out stays out, and with identical members it is exact: an ensemble of a model with itself
gives that model's log-probabilities bit for bit, and an ensemble of one model is that model (its step is
returned as it is).

Members must share the source and target vocabularies (the same tokenizers): the sources are encoded
once and the log-probabilities are added id by id. :func:`check_members` refuses others with one error.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import TransformerMTError
from .search import step_log_probs


class EnsembleMemory:
    """The members' encoder outputs; indexing rows (sentences leaving the batch) indexes each."""

    def __init__(self, parts: list[torch.Tensor]):
        self.parts = parts

    def __getitem__(self, index) -> EnsembleMemory:
        return EnsembleMemory([part[index] for part in self.parts])


class Ensemble(nn.Module):
    def __init__(self, models: list[nn.Module]):
        super().__init__()
        if not models:
            raise ValueError("an ensemble needs at least one model")
        self.models = nn.ModuleList(models)
        self.pad_id = models[0].pad_id

    def encode(self, src_tokens: torch.Tensor):
        encoded = [model.encode(src_tokens) for model in self.models]
        return EnsembleMemory([memory for memory, _ in encoded]), encoded[0][1]  # one pad id: the same mask

    def new_cache(self) -> list:
        return [model.new_cache() for model in self.models]

    def reorder_cache(self, cache: list, row_index: torch.Tensor, sentence_index: torch.Tensor | None = None) -> list:
        return [model.reorder_cache(own, row_index, sentence_index) for model, own in zip(self.models, cache)]

    def step_log_probs(self, prev_tokens, memory: EnsembleMemory, src_mask, cache,
                       return_attention: bool = False, return_self_attention: bool = False,
                       attention_layer: int | None = None) -> torch.Tensor:
        if return_attention or return_self_attention:
            raise TransformerMTError("attention weights and alignments come from one model; an ensemble's "
                                     "members attend differently: give one --model")
        steps = [step_log_probs(model, prev_tokens, part, src_mask, None if cache is None else own)
                 for model, part, own in zip(self.models, memory.parts, cache or [None] * len(self.models))]
        if len(steps) == 1:
            return steps[0]
        return torch.stack(steps).mean(dim=0)


def check_members(translators: list, names: list[str]) -> None:
    """Refuse, with one error naming both runs, members whose tokenizers (vocabularies) or source
    encoding differ from the first member's."""
    first = translators[0]
    for translator, name in zip(translators[1:], names[1:]):
        for side in ("target", "source"):
            attribute = "tgt_tokenizer" if side == "target" else "src_tokenizer"
            if _vocabulary(getattr(translator, attribute)) != _vocabulary(getattr(first, attribute)):
                raise TransformerMTError(
                    f"--model {name} has another {side} vocabulary (tokenizer) than --model {names[0]}: the models "
                    f"of an ensemble must share their vocabularies, since their predictions are combined token "
                    f"by token; ensemble runs trained with the same tokenizer (e.g. tokenizer.model of one run)")
        if translator.config.model.source_eos != first.config.model.source_eos:
            raise TransformerMTError(f"--model {name} and --model {names[0]} encode sources differently "
                                     f"(model.source_eos): they cannot be ensembled")


def _vocabulary(tokenizer) -> tuple:
    """What decides a tokenizer's ids: its pieces in id order, and its SentencePiece model (normalisation)."""
    return (len(tokenizer), tuple(tokenizer.id_to_piece(list(range(len(tokenizer))))),
            tokenizer.sp.serialized_model_proto())
