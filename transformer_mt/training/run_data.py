"""What a run trains and validates on, loaded when a Trainer starts: the tokenizers (trained on first use,
copied from the config's given models or a parent run), checked against the checkpoint a run resumes, and
the encoded corpora (cached, see data/corpus.py): the training data, as one corpus or a mix of several
(data/mixing.py), and the validation set as text and as ids.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from .. import checkpoint as ckpt
from ..config import Config
from ..data.batches import count_oversized
from ..data.corpus import EncodedCorpus, encode_parallel, read_parallel
from ..data.mixing import CorpusMix, load_mix
from ..data.tokenizer import Tokenizer, build_tokenizers, id_lists
from ..data.tokenizer_files import check_tags
from ..decoding.translator import CHECKPOINT_NAMES
from ..safe_files import make_run_folder

log = logging.getLogger("transformer_mt")


@dataclass
class RunData:
    src_tok: Tokenizer
    tgt_tok: Tokenizer
    tokenizer_sha256: dict  # what checkpoints record: they fit only these tokenizers
    train_data: EncodedCorpus | CorpusMix
    train_mix: CorpusMix | None  # several corpora, tags or subword sampling (data/mixing.py); else None
    valid_src: list[str]
    valid_ref: list[str]
    valid_data: EncodedCorpus


def load_run_data(config: Config, run_dir: Path, given_tokenizers, resume_state: dict | None) -> RunData:
    """The tokenizers and encoded corpora of the run in ``run_dir``. ``given_tokenizers``: a parent run's
    models to copy in (init_from.Parent.tokenizers), or None; ``resume_state``: the checkpoint resumed."""
    cfg, data = config.training, config.data
    files = data.training_files()
    src_tok, tgt_tok = build_tokenizers(run_dir, config.tokenizer, [f[0] for f in files], [f[1] for f in files],
                                        given=given_tokenizers, symbols=data.tags())
    if data.tags():  # a tokenizer taken from a parent run (init_from) or trained before the tags were added
        check_tags(src_tok.sp, data.tags(), f"the run's tokenizer {src_tok.model_path}",
                   "train into a new --output-dir (without training.init_from) so that a tokenizer with the "
                   "tags is trained")
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
    valid_src, valid_ref = read_parallel(data.path("valid", data.src_lang), data.path("valid", data.tgt_lang))
    valid_data = encode_parallel(
        data.path("valid", data.src_lang), data.path("valid", data.tgt_lang), src_tok, tgt_tok,
        data.max_len, cache_dir=cache_dir, num_workers=data.num_workers)
    return RunData(src_tok, tgt_tok, tokenizer_sha256, train_data, train_mix, valid_src, valid_ref, valid_data)
