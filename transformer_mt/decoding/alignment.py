"""Hard alignments between source and target pieces (or words) from cross-attention.

Each target piece is aligned to the source piece that the head-averaged cross-attention of one
decoder layer weighs most when the piece is predicted (as fairseq's ``--print-alignment``). The
default layer is the penultimate one, as fairseq's ``alignment_layer``: Garg et al. (2019,
"Jointly Learning to Align and Translate with Transformer Models") found its attention closest
to human word alignments. Pairs are ``(i, j)``: source index i aligned to target index j, both
counted from 0, written ``i-j``.

Word-level alignments map pieces to words by SentencePiece's word marker: a piece starting with
``▁`` (a space before it in the text) starts a new word, the other pieces continue the word
before. A source word and a target word are aligned when any of their pieces are.
"""

from __future__ import annotations

import torch

from ..errors import TransformerMTError

WORD_START = "\u2581"  # ▁, SentencePiece's mark of a space before a piece
ALIGNMENT_UNITS = ("pieces", "words")


def default_alignment_layer(num_layers: int) -> int:
    """The penultimate decoder layer (numbered from 1), or the only one."""
    return max(1, num_layers - 1)


def check_alignment_layer(layer: int | None, num_layers: int) -> int:
    """``layer`` (None: the default), checked against the model's decoder layers 1..num_layers."""
    if layer is None:
        return default_alignment_layer(num_layers)
    if isinstance(layer, bool) or not isinstance(layer, int) or not 1 <= layer <= num_layers:
        raise TransformerMTError(f"alignment layer {layer!r} does not exist: the model has {num_layers} decoder "
                                 f"layer(s), numbered 1 to {num_layers}")
    return layer


def hard_alignment(cross_attention: torch.Tensor, layer: int, target_length: int) -> list[tuple[int, int]]:
    """One pair (source piece, target piece) per target piece, from ``cross_attention`` (layers, heads,
    steps, source pieces) of one hypothesis; ``layer`` counts from 1. A last step that produced the
    end token (steps = target_length + 1) is no piece and is left out."""
    weights = cross_attention[layer - 1, :, :target_length].float().mean(dim=0)  # (target pieces, source pieces)
    return [(source, target) for target, source in enumerate(weights.argmax(dim=-1).tolist())]


def piece_words(pieces: list[str]) -> tuple[list[int], list[str]]:
    """The word index of each piece and the words (pieces joined, markers removed)."""
    word_of_piece: list[int] = []
    words: list[str] = []
    for piece in pieces:
        if piece.startswith(WORD_START) or not words:
            words.append(piece.lstrip(WORD_START))
        else:
            words[-1] += piece
        word_of_piece.append(len(words) - 1)
    return word_of_piece, words


def word_alignment(pairs: list[tuple[int, int]], source_pieces: list[str],
                   target_pieces: list[str]) -> tuple[list[tuple[int, int]], list[str], list[str]]:
    """Piece pairs lifted to word pairs (each once, in target order); returns them and both word lists."""
    source_word, source_words = piece_words(source_pieces)
    target_word, target_words = piece_words(target_pieces)
    word_pairs = {(source_word[i], target_word[j]) for i, j in pairs}
    return sorted(word_pairs, key=lambda pair: (pair[1], pair[0])), source_words, target_words


def format_alignment(pairs: list[tuple[int, int]]) -> str:
    """``i-j`` pairs separated by spaces, as fairseq prints them: ``0-0 1-2 2-1``."""
    return " ".join(f"{i}-{j}" for i, j in pairs)


def check_alignment_unit(unit: str) -> str:
    if unit not in ALIGNMENT_UNITS:
        raise TransformerMTError(f"unknown alignment unit {unit!r}; use {' or '.join(ALIGNMENT_UNITS)}")
    return unit
