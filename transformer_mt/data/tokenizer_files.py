"""The SentencePiece model files of a run, and what a model file must be before a tokenizer is built on it.

Special ids are fixed for every model: pad 0, unk 1, bos 2, eos 3. A run keeps its models as ``spm.model``
(a joint vocabulary) or ``spm.src.model`` and ``spm.tgt.model``, and an imported model's id lists as
``spm.src.ids.json`` and ``spm.tgt.ids.json``. The checks here are what the config (its given models), the
tokenizer, the trainer (corpus tags) and the Marian import ask of a model file; checkpoints find a run's
models by these names.
"""

from __future__ import annotations

from pathlib import Path

import sentencepiece as spm

from ..errors import TransformerMTError
from ..files import file_problem
from ..safe_files import read_user_file

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
# A SentencePiece model is a few MB at most (a 64k-piece one is ~1 MB); anything far larger is not one.
MAX_MODEL_BYTES = 256 << 20
# An imported model's id list (spm.*.ids.json): 250k pieces are ~6 MB.
MAX_IDS_BYTES = 64 << 20


def tokenizer_paths(run_dir, joint: bool) -> tuple[Path, Path]:
    run_dir = Path(run_dir)
    if joint:
        return run_dir / "spm.model", run_dir / "spm.model"
    return run_dir / "spm.src.model", run_dir / "spm.tgt.model"


def special_ids_problem(sp: spm.SentencePieceProcessor) -> str | None:
    """Why a SentencePiece model's special ids do not fit this toolkit (pad/unk/bos/eos = 0/1/2/3), or None."""
    ids = (sp.pad_id(), sp.unk_id(), sp.bos_id(), sp.eos_id())
    if ids == (PAD_ID, UNK_ID, BOS_ID, EOS_ID):
        return None
    return (f"has special ids pad/unk/bos/eos = {'/'.join(map(str, ids))} (-1: none), transformer-mt needs "
            f"{PAD_ID}/{UNK_ID}/{BOS_ID}/{EOS_ID}; train it with --pad_id={PAD_ID} --unk_id={UNK_ID} "
            f"--bos_id={BOS_ID} --eos_id={EOS_ID}")


def check_model_file(path: Path, key: str, source: str = "config", special_ids: bool = True,
                     fix: str | None = None) -> None:
    """One clear error if ``path`` (named by config ``key``) is not a SentencePiece model this toolkit can use
    (``special_ids``: with pad/unk/bos/eos = 0/1/2/3, as the models whose ids are their own need)."""
    problem = file_problem(path, "a SentencePiece .model file")
    if problem is None and path.stat().st_size > MAX_MODEL_BYTES:
        problem = f"is {path.stat().st_size >> 20} MiB, far too large for a SentencePiece model"
    if problem is None:
        sp = spm.SentencePieceProcessor()
        try:
            sp.LoadFromSerializedProto(read_user_file(path, key, limit=MAX_MODEL_BYTES))
        except (OSError, RuntimeError):
            problem = "is not a SentencePiece model (it cannot be loaded)"
        else:
            problem = special_ids_problem(sp) if special_ids else None
    if problem is not None:
        fix = fix or f"point '{key}' at a SentencePiece .model file, or leave it out to train one"
        raise TransformerMTError(f"{source}: '{key}' {path} {problem}; {fix}")


def check_tags(sp: spm.SentencePieceProcessor, tags: list[str], model: str, fix: str) -> None:
    """Refuse a source model without a piece of its own for each corpus tag or target-language token (``tags``):
    it would become pieces shared with text, or unk, and the model could not tell tagged sources from the others."""
    missing = [tag for tag in tags if sp.piece_to_id(tag) == sp.unk_id()]
    if missing:
        what = "target-language token(s) and corpus tag(s)" if any(t.startswith(">>") for t in missing) else \
            "corpus tag(s)"
        raise TransformerMTError(f"{model} has no piece for the {what} {', '.join(missing)} "
                                 f"(data.train_corpora); {fix}")


def check_model_tags(path, tags: list[str], model: str, fix: str) -> None:
    """check_tags on the SentencePiece model file ``path`` (a config's given source model)."""
    check_tags(spm.SentencePieceProcessor(model_proto=read_user_file(path, "tokenizer model", limit=MAX_MODEL_BYTES)),
               tags, model, fix)


def ids_paths(run_dir) -> tuple[Path, Path]:
    """The id lists of a run whose tokenizer.vocabulary is shared or separate (see MappedTokenizer)."""
    run_dir = Path(run_dir)
    return run_dir / "spm.src.ids.json", run_dir / "spm.tgt.ids.json"
