"""What a run trains and validates on, loaded when a Trainer starts: the tokenizers (trained on first use,
copied from the config's given models or a parent run), checked against the checkpoint a run resumes, and
the encoded corpora (cached, see data/corpus.py): the training data, as one corpus or a mix of several
(data/mixing.py), and the validation set as text and as ids: one per direction in a multilingual run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from .. import checkpoint as ckpt
from ..config import Config, language_token
from ..data.batches import count_oversized
from ..data.corpus import EncodedCorpus, encode_parallel, read_parallel
from ..data.mixing import CorpusMix, load_mix
from ..data.tokenizer import Tokenizer, build_tokenizers, id_lists
from ..data.tokenizer_files import check_tags
from ..decoding.translator import CHECKPOINT_NAMES
from ..safe_files import make_run_folder

log = logging.getLogger("transformer_mt")


@dataclass
class ValidationSet:
    """The validation set of one direction: its text, its ids, and what its sources start with."""

    direction: tuple[str, str]  # (source language, target language)
    sources: list[str]
    references: list[str]
    data: EncodedCorpus
    target_language: str | None  # what a multilingual run's Translator is told (its >>xx<< token); else None
    prefix_ids: tuple[int, ...] = ()  # that token's id before each source (a multilingual run), else none

    @property
    def name(self) -> str:
        """"de-en": the direction's key in validation records."""
        return f"{self.direction[0]}-{self.direction[1]}"


@dataclass
class RunData:
    src_tok: Tokenizer
    tgt_tok: Tokenizer
    tokenizer_sha256: dict  # what checkpoints record: they fit only these tokenizers
    train_data: EncodedCorpus | CorpusMix
    train_mix: CorpusMix | None  # several corpora, tags or subword sampling (data/mixing.py); else None
    valid_sets: list[ValidationSet]  # one per direction (data.directions()), in order

    # The first (for one direction: the only) validation set, as tests and scripts read it.
    valid_src = property(lambda self: self.valid_sets[0].sources)
    valid_ref = property(lambda self: self.valid_sets[0].references)
    valid_data = property(lambda self: self.valid_sets[0].data)


def load_run_data(config: Config, run_dir: Path, given_tokenizers, resume_state: dict | None) -> RunData:
    """The tokenizers and encoded corpora of the run in ``run_dir``. ``given_tokenizers``: a parent run's
    models to copy in (init_from.Parent.tokenizers), or None; ``resume_state``: the checkpoint resumed."""
    cfg, data = config.training, config.data
    files = data.training_files()
    src_files, tgt_files = [f.src for f in files], [f.tgt for f in files]
    if data.multilingual():
        # Each file once (a four-way parallel corpus read in six directions names each file three times): a
        # joint model learns every language from one list of files.
        src_files, tgt_files = list(dict.fromkeys(src_files)), list(dict.fromkeys(tgt_files))
        if config.tokenizer.joint:
            src_files, tgt_files = list(dict.fromkeys(src_files + tgt_files)), []
    src_tok, tgt_tok = build_tokenizers(run_dir, config.tokenizer, src_files, tgt_files,
                                        given=given_tokenizers, symbols=data.symbols())
    if data.symbols():  # a tokenizer taken from a parent run (init_from) or trained before the tags were added
        check_tags(src_tok.sp, data.symbols(), f"the run's tokenizer {src_tok.model_path}",
                   "train into a new --output-dir (without training.init_from) so that a tokenizer with the "
                   "tags and tokens is trained")
    ids = id_lists(src_tok, tgt_tok)
    tokenizer_sha256 = ckpt.tokenizer_checksums(src_tok.model_path, tgt_tok.model_path, ids)
    if resume_state:
        ckpt.check_tokenizer_checksums(resume_state, src_tok.model_path, tgt_tok.model_path,
                                       run_dir / CHECKPOINT_NAMES["last"], actual=tokenizer_sha256, ids_paths=ids)
    cache_dir = data.cache_path(run_dir)
    if not data.cache_dir:  # the run's own cache/: refused if it is a link (entries would be written through it)
        make_run_folder(cache_dir)
    train_mix = None
    if not data.train_corpora and not data.subword_alpha:
        train_data = encode_parallel(
            data.path("train", data.src_lang), data.path("train", data.tgt_lang), src_tok, tgt_tok,
            data.max_len, cache_dir=cache_dir, unpunctuated_copies=data.unpunctuated_copies, seed=cfg.seed,
            num_workers=data.num_workers)
    else:
        train_mix = train_data = load_mix(files, src_tok, tgt_tok, data, cfg.seed, cache_dir)
    oversized = count_oversized(train_data, cfg.batch_tokens)
    if oversized:
        log.warning("%d training sentences are longer than training.batch_tokens=%d (padded tokens); "
                    "each gets a batch of its own, over that budget: raise training.batch_tokens or lower "
                    "data.max_len", oversized, cfg.batch_tokens)
    valid_sets = []
    multilingual = data.multilingual()
    for direction in data.directions():
        src_path, ref_path = data.split_files("valid", direction) if multilingual else \
            (data.path("valid", data.src_lang), data.path("valid", data.tgt_lang))
        sources, references = read_parallel(src_path, ref_path)
        encoded = encode_parallel(src_path, ref_path, src_tok, tgt_tok, data.max_len, cache_dir=cache_dir,
                                  num_workers=data.num_workers)
        token = language_token(direction[1]) if multilingual else ""
        valid_sets.append(ValidationSet(direction, sources, references, encoded, direction[1] if token else None,
                                        tuple(src_tok.piece_to_id([token])) if token else ()))
    return RunData(src_tok, tgt_tok, tokenizer_sha256, train_data, train_mix, valid_sets)
