"""Lexical shortlists: the output layer computes only the target pieces a batch can plausibly need.

    transformer-mt shortlist --model runs/student          # writes runs/student/shortlist.npz
    transformer-mt translate --model runs/student --shortlist "ein Satz"

A run's shortlist file (``shortlist.npz``, built by :func:`build_shortlist` from the run's training corpora
and tokenizers) holds a translation lexicon (data/lexicon.py: for each source piece the target pieces that
co-occur with it best, by Dice) and the target pieces by frequency. For a batch of sources the output
vocabulary is the union of the ``top_k`` lexicon entries of every source piece in the batch, the ``frequent``
most frequent target pieces, the special tokens (pad, unk, bos, eos) and the pieces of the batch's forced
prefixes and glossary constraints (:meth:`Shortlist.rows`): sorted full-vocabulary ids, ``rows``.

Search then runs, unchanged, over :class:`ShortlistedModel`, a view of the model whose vocabulary is
``rows``: its output layer is a linear layer of those rows of the real one (built once per batch), and its
decoder maps the ids it is fed back to full ids. Search sees ids 0 .. len(rows) - 1; since ``rows`` is sorted
and holds ids 0-3, the special tokens keep their ids (pad 0, bos 2, eos 3) and search needs no change.
The softmax is over the shortlist only (as Marian's): scores are log-probabilities among the shortlist's
pieces. With every piece in the shortlist the output layer is the real one's rows in order and the
translations and scores are the same, bit for bit, as without (tests/test_shortlist.py); without a shortlist
none of this runs. The translator (translator.py) maps a batch's prefixes and constraints into the
shortlist's ids and the output back with :class:`BatchVocabulary`.
"""

from __future__ import annotations

import io
import json
import logging
import zipfile
from pathlib import Path

import numpy as np
import torch
import yaml
from torch import nn

from ..checkpoint import tokenizer_checksums
from ..config import MAX_CONFIG_BYTES, config_from_dict
from ..data.corpus import encode_parallel
from ..data.lexicon import cooccurrence_lexicon
from ..data.tokenizer import SPECIAL_IDS, Tokenizer, id_lists, load_tokenizers
from ..errors import TransformerMTError
from ..kernels import Int8Linear
from ..safe_files import read_regular_file, read_user_file, regular_file_problem, write_run_file
from .ensemble import Ensemble

log = logging.getLogger(__name__)

SHORTLIST_NAME = "shortlist.npz"
SHORTLIST_FORMAT = "transformer-mt shortlist 1"
# What build_shortlist stores (lexicon entries per source piece) and what decoding takes by default. Marian's
# recipes use 100 frequent words and 100 translations per source word; pieces are finer than words, and a
# batch's union of top-k grows with the batch, so fewer per piece. Measure on a model (scripts/benchmark.py).
STORED_TOP_K = 100
DEFAULT_TOP_K = 30
DEFAULT_FREQUENT = 100
# A lexicon's best entries are settled long before; counting took ~1 s per 10k pairs of ~16 pieces a side (one
# thread of a Zen 4 EPYC), so ~3 minutes for these and ~3 s for Multi30k.
DEFAULT_MAX_PAIRS = 2_000_000
MAX_FILE_BYTES = 1 << 30  # (source vocabulary x stored top-k) x 8 bytes: far below this for any real vocabulary
MAX_TOP_K = 1000  # target pieces per source piece: a shortlist of more is no shortlist
MAX_INFO_CHARS = 1 << 16  # the file's description (JSON): a few hundred characters
ALWAYS = sorted(SPECIAL_IDS)  # pad, unk, bos, eos: ids 0-3, so that they keep their ids in a shortlist


def _read_npz_member(archive: zipfile.ZipFile, name: str, limit: int) -> np.ndarray:
    """The array ``name`` of an .npz archive, refused (ValueError) when its header declares more than ``limit``
    bytes or objects, before any of its data is unpacked."""
    with archive.open(f"{name}.npy", mode="r") as stream:
        version = np.lib.format.read_magic(stream)
        read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                       (2, 0): np.lib.format.read_array_header_2_0}.get(version)
        if read_header is None:
            raise ValueError(f"{name}: .npy format {version}")
        shape, fortran_order, dtype = read_header(stream)
        if dtype.hasobject:
            raise ValueError(f"{name} holds Python objects")
        size = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if size < 0 or size * dtype.itemsize > limit:
            raise ValueError(f"{name} declares {shape} of {dtype}, more than a shortlist holds")
        raw = stream.read(size * dtype.itemsize)
    if len(raw) != size * dtype.itemsize:
        raise ValueError(f"{name} is cut short")
    return np.frombuffer(raw, dtype=dtype).reshape(shape, order="F" if fortran_order else "C")


def shortlist_path(run_dir) -> Path:
    return Path(run_dir) / SHORTLIST_NAME


def _checksums(src_tok: Tokenizer, tgt_tok: Tokenizer) -> dict:
    return tokenizer_checksums(src_tok.model_path, tgt_tok.model_path, id_lists(src_tok, tgt_tok))


class Shortlist:
    """A run's lexicon and frequent target pieces, and the output vocabulary of a batch (:meth:`rows`)."""

    def __init__(self, candidates: np.ndarray, target_by_frequency: np.ndarray, top_k: int = DEFAULT_TOP_K,
                 frequent: int = DEFAULT_FREQUENT):
        if top_k < 0 or frequent < 0:
            raise TransformerMTError(f"a shortlist's top-k and frequent pieces must be at least 0, got {top_k} "
                                     f"and {frequent}")
        self.target_vocab = len(target_by_frequency)
        self.top_k = min(top_k, candidates.shape[1])
        self.frequent = min(frequent, self.target_vocab)
        self.table = torch.from_numpy(np.ascontiguousarray(candidates[:, :self.top_k], dtype=np.int64))
        always = np.concatenate([ALWAYS, target_by_frequency[:self.frequent]]).astype(np.int64)
        self.always = torch.from_numpy(np.unique(always))

    @classmethod
    def full(cls, source_vocab: int, target_vocab: int) -> Shortlist:
        """Every target piece: decoding is that of the whole vocabulary (the reference in tests)."""
        return cls(np.full((source_vocab, 0), -1, dtype=np.int32), np.arange(target_vocab, dtype=np.int32), 0,
                   target_vocab)

    @classmethod
    def load(cls, path, src_tok: Tokenizer, tgt_tok: Tokenizer, top_k: int | None = None,
             frequent: int | None = None) -> Shortlist:
        """The shortlist file ``path``, checked against the model's tokenizers; ``top_k``/``frequent``: None for
        the values the file was built with."""
        path = Path(path)
        problem = regular_file_problem(path)
        if problem is not None:
            fix = (f"build it with: transformer-mt shortlist --model {path.parent}" if problem == "does not exist"
                   else "remove it and build it again")
            raise TransformerMTError(f"shortlist {path} {problem}; {fix}")
        data = read_user_file(path, "shortlist", limit=MAX_FILE_BYTES)
        # Each array's size is known from its header before its data is unpacked: a member of a few kB may
        # inflate to gigabytes, and only these three are read (the stored scores are not needed to decode).
        sizes = {"candidates": len(src_tok) * MAX_TOP_K * 8, "target_by_frequency": len(tgt_tok) * 8,
                 "info": MAX_INFO_CHARS * 4}
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                fields = {name: _read_npz_member(archive, name, limit) for name, limit in sizes.items()}
            info = json.loads(str(fields["info"]))
            candidates, frequency = fields["candidates"], fields["target_by_frequency"]
        except (OSError, ValueError, KeyError, EOFError, TypeError, zipfile.BadZipFile, RecursionError) as exc:
            raise TransformerMTError(f"shortlist {path} is damaged or not a shortlist ({type(exc).__name__}); build "
                                     f"it again with: transformer-mt shortlist --model {path.parent}") from None
        if not isinstance(info, dict) or info.get("format") != SHORTLIST_FORMAT:
            raise TransformerMTError(f"shortlist {path} is not a shortlist of this version of transformer-mt; build "
                                     f"it again with: transformer-mt shortlist --model {path.parent}")
        if info.get("tokenizer_sha256") != _checksums(src_tok, tgt_tok):
            raise TransformerMTError(f"shortlist {path} was built for another tokenizer than the model's; build it "
                                     f"again with: transformer-mt shortlist --model {path.parent}")
        if (candidates.ndim != 2 or candidates.shape[0] != len(src_tok) or frequency.shape != (len(tgt_tok),)
                or not np.issubdtype(candidates.dtype, np.integer) or not np.issubdtype(frequency.dtype, np.integer)
                or (candidates.size and not -1 <= candidates.min() <= candidates.max() < len(tgt_tok))
                or not np.array_equal(np.sort(frequency), np.arange(len(tgt_tok)))):
            raise TransformerMTError(f"shortlist {path} does not fit the model's vocabularies ({len(src_tok)} source, "
                                     f"{len(tgt_tok)} target pieces); build it again with: transformer-mt shortlist "
                                     f"--model {path.parent}")
        stored = {"top_k": info.get("top_k"), "frequent": info.get("frequent")}
        if not all(isinstance(value, int) and not isinstance(value, bool) for value in stored.values()):
            raise TransformerMTError(f"shortlist {path} is damaged (its top_k and frequent are not counts); build it "
                                     f"again with: transformer-mt shortlist --model {path.parent}")
        return cls(candidates, frequency, stored["top_k"] if top_k is None else top_k,
                   stored["frequent"] if frequent is None else frequent)

    def rows(self, src_tokens: torch.Tensor, pad_id: int, extra: list[int] = ()) -> torch.Tensor:
        """The sorted full-vocabulary ids a batch of sources (B, S) may be translated into, on their device:
        its source pieces' lexicon entries, the frequent pieces, ids 0-3 and ``extra`` (forced pieces)."""
        source = src_tokens[src_tokens != pad_id].cpu()
        parts = [self.always, self.table[source].view(-1)]
        if extra:
            parts.append(torch.tensor(list(extra), dtype=torch.long))
        ids = torch.cat(parts)
        return torch.unique(ids[ids >= 0]).to(src_tokens.device)  # sorted


def output_rows(linear: nn.Module, rows: torch.Tensor) -> nn.Module:
    """A linear layer of ``linear``'s output rows ``rows``, of the same kind (so that it computes as the original
    does: oneDNN, int8, plain), built without initialising weights that are replaced at once."""
    weight = linear.weight.detach().index_select(0, rows)
    bias = None if linear.bias is None else linear.bias.detach().index_select(0, rows)
    plain = nn.Linear if isinstance(linear, Int8Linear) else type(linear)
    layer = plain(linear.in_features, len(rows), bias=bias is not None, device="meta", dtype=weight.dtype)
    layer.weight = nn.Parameter(weight, requires_grad=False)
    if bias is not None:
        layer.bias = nn.Parameter(bias, requires_grad=False)
    return Int8Linear(layer) if isinstance(linear, Int8Linear) else layer


class ShortlistedModel(nn.Module):
    """``model`` as search sees it with the output vocabulary ``rows`` (sorted full ids, 0-3 among them): ids
    0 .. len(rows) - 1 in and out. The weights are the model's (shared, not copied) except the output layer's
    rows, copied once for the batch."""

    def __init__(self, model: nn.Module, rows: torch.Tensor):
        super().__init__()
        self.model = model
        self.rows = rows
        self.pad_id = model.pad_id
        self.generator = output_rows(model.generator, rows)

    def encode(self, src_tokens: torch.Tensor):
        return self.model.encode(src_tokens)

    def decode(self, tgt_tokens: torch.Tensor, *args, **kwargs):
        return self.model.decode(self.rows[tgt_tokens], *args, **kwargs)

    def new_cache(self) -> list:
        return self.model.new_cache()

    def reorder_cache(self, cache, row_index: torch.Tensor, sentence_index: torch.Tensor | None = None):
        return self.model.reorder_cache(cache, row_index, sentence_index)


class BatchVocabulary:
    """One batch's shortlist ``rows``: the model restricted to it, and ids translated between the full
    vocabulary and the shortlist's (search's)."""

    def __init__(self, rows: torch.Tensor):
        self.rows = rows
        self.full_ids = rows.tolist()
        self._local: dict[int, int] | None = None

    def model(self, model: nn.Module) -> nn.Module:
        if isinstance(model, Ensemble):  # the members share the vocabulary: each restricted to the same rows
            return Ensemble([ShortlistedModel(member, self.rows) for member in model.models])
        return ShortlistedModel(model, self.rows)

    def local_tensor(self, ids: torch.Tensor) -> torch.Tensor:
        """Full ids (all in the shortlist; padding 0 stays 0) as the shortlist's."""
        return torch.searchsorted(self.rows, ids.contiguous())

    def local(self, ids: list[int]) -> list[int]:
        if self._local is None:
            self._local = {full: local for local, full in enumerate(self.full_ids)}
        return [self._local[i] for i in ids]

    def full(self, ids: list[int]) -> list[int]:
        return [self.full_ids[i] for i in ids]


def build_shortlist(run_dir, top_k: int = DEFAULT_TOP_K, frequent: int = DEFAULT_FREQUENT,
                    stored_top_k: int = STORED_TOP_K, max_pairs: int = DEFAULT_MAX_PAIRS) -> dict:
    """Count the run's training corpora (its config's data section, read from the working directory, encoded
    with the run's tokenizers: the run's cached ids when training made them) into ``run_dir``/shortlist.npz.
    ``top_k``/``frequent``: what decoding takes unless told otherwise; ``stored_top_k`` lexicon entries are
    kept per source piece. Returns what was written."""
    run_dir = Path(run_dir)
    for name, value, least in (("--top-k", top_k, 0), ("--frequent", frequent, 0), ("--max-pairs", max_pairs, 0)):
        if value < least:
            raise TransformerMTError(f"{name} must be at least {least}, got {value}")
    if top_k > MAX_TOP_K:
        raise TransformerMTError(f"--top-k {top_k} is more target pieces per source piece than a shortlist takes; "
                                 f"give at most {MAX_TOP_K} (default {DEFAULT_TOP_K})")
    stored_top_k = min(max(stored_top_k, top_k), MAX_TOP_K)
    if regular_file_problem(run_dir / "config.yaml") is not None:
        raise TransformerMTError(f"{run_dir} is not a run directory (no config.yaml); give the --output-dir of a "
                                 f"training run")
    try:
        raw = yaml.safe_load(read_regular_file(run_dir / "config.yaml", MAX_CONFIG_BYTES).decode("utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise TransformerMTError(f"{run_dir / 'config.yaml'} cannot be read ({type(exc).__name__}); give the "
                                 f"--output-dir of a training run") from None
    config = config_from_dict(raw, source=str(run_dir / "config.yaml"))
    src_tok, tgt_tok = load_tokenizers(run_dir, config.tokenizer.joint, config.tokenizer.vocabulary)
    data = config.data
    files = data.training_files()
    for corpus in files:
        for path in (corpus.src, corpus.tgt):
            problem = regular_file_problem(path)
            if problem is not None:
                raise TransformerMTError(f"training file {path} of {run_dir} {problem}; the shortlist is counted on "
                                         f"the run's training corpus: run from the directory training ran in "
                                         f"(data.root {str(data.root)!r} is read from the working directory)")
    cache_dir = data.cache_path(run_dir)
    # The arguments of training's own encoding (training/run_data.py), so that its cached ids are reused.
    corpora = [encode_parallel(src, tgt, src_tok, tgt_tok, data.max_len, cache_dir=cache_dir,
                               unpunctuated_copies=data.unpunctuated_copies, seed=config.training.seed,
                               num_workers=data.num_workers, text_index=bool(data.subword_alpha))
               for src, tgt, *_ in files]
    lexicon = cooccurrence_lexicon(corpora, len(src_tok), len(tgt_tok), stored_top_k, max_pairs)
    info = {"format": SHORTLIST_FORMAT, "statistic": "dice", "pairs": lexicon.pairs, "top_k": top_k,
            "frequent": frequent, "tokenizer_sha256": _checksums(src_tok, tgt_tok)}
    path = shortlist_path(run_dir)
    write_run_file(path, lambda handle: np.savez(handle, candidates=lexicon.candidates, scores=lexicon.scores,
                                                 target_by_frequency=lexicon.target_by_frequency,
                                                 info=np.array(json.dumps(info))))
    return {"path": str(path), "pairs": lexicon.pairs, "top_k": top_k, "frequent": frequent,
            "stored_top_k": stored_top_k}
