"""Starting a run from a trained model (``training.init_from``): its parent.

The parent is a run directory (its best checkpoint, or its last one when the optimizer state is
kept), a checkpoint file, or a CTranslate2 export of a run (the checkpoint its export.json names).
The new run takes the parent's weights and tokenizer(s) and, as fairseq's ``--reset-optimizer`` and
Eole's ``reset_optim`` do by default, a fresh optimizer, schedule and step count;
``training.init_reset_optimizer: false`` keeps the parent's optimizer state (Adam's moments).

The parent is read, never written: it is loaded through the safe checkpoint loader (a crafted
file is refused like any checkpoint), its tokenizer files are checked against the SHA-256 its
checkpoint recorded, and a run directory inside it (or the parent's own) is refused. The model
section must be the parent's (dropout aside: it changes training, not the function the weights
compute); the data, tokenizer training and training sections may differ freely.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .. import checkpoint as ckpt
from ..config import Config, config_from_dict
from ..data.tokenizer_files import ids_paths, tokenizer_paths
from ..decoding.translator import find_checkpoint
from ..errors import TransformerMTError
from ..files import file_sha256
from ..safe_files import check_no_foreign_link, read_user_file
from .rundir import is_run_dir

# Model keys that may differ from the parent's: regularisation only, the weights compute the same function.
FREE_MODEL_KEYS = {"dropout", "attention_dropout", "activation_dropout"}
EXPORT_INFO = "export.json"  # interop.ctranslate2_export.EXPORT_INFO (not imported: it needs ctranslate2 only to run)
MAX_EXPORT_INFO_BYTES = 1 << 20  # interop.ctranslate2_export.MAX_EXPORT_INFO_BYTES, likewise


@dataclass
class Parent:
    """The checkpoint a run starts from and what the run takes from it."""

    checkpoint: Path
    sha256: str
    state: dict
    tokenizers: tuple[tuple[Path, str], tuple[Path, str]]  # (source, target): file and where it comes from

    def record(self) -> dict:
        """What run.json and every checkpoint of the new run say about where it started."""
        return {"checkpoint": str(self.checkpoint), "sha256": self.sha256, "step": self.state.get("step")}


def parent_checkpoint(init_from: str, keep_optimizer: bool) -> Path:
    """The checkpoint file ``training.init_from`` names (a run directory, a checkpoint, an export)."""
    path = Path(init_from)
    check_no_foreign_link(path, "'training.init_from'")  # its files are read by name below
    if not path.exists():
        raise TransformerMTError(f"'training.init_from' {path} does not exist; name a run directory, a checkpoint "
                                 f"file or a CTranslate2 export of a run")
    if path.is_dir() and (path / EXPORT_INFO).is_file() and not (path / "run.json").exists():
        try:
            info = read_user_file(path / EXPORT_INFO, "'training.init_from' export info", limit=MAX_EXPORT_INFO_BYTES,
                                  fix="name the run directory it was exported from instead")
            path = Path(json.loads(info.decode("utf-8"))["checkpoint"])
        except (OSError, ValueError, KeyError, TypeError):
            raise TransformerMTError(f"'training.init_from' {init_from}: its {EXPORT_INFO} is damaged; name the run "
                                     f"directory it was exported from instead") from None
        if not path.is_file():
            raise TransformerMTError(f"'training.init_from' {init_from} is a CTranslate2 export of {path}, which no "
                                     f"longer exists; name a run directory or a checkpoint file instead")
    elif path.is_dir():
        path = find_checkpoint(path, "last" if keep_optimizer else "best")
    return path.resolve()


def check_same_model(config: Config, parent_config: dict, checkpoint: Path) -> None:
    """Refuse a model section that differs from the parent's, naming every key that does."""
    parent_model = {**Config().to_dict()["model"], **parent_config.get("model", {})}
    diffs = [f"model.{key}: {parent_model.get(key)!r} (parent) -> {value!r}"
             for key, value in config.to_dict()["model"].items()
             if key not in FREE_MODEL_KEYS and parent_model.get(key) != value]
    if diffs:
        raise TransformerMTError(
            f"'training.init_from' {checkpoint} was trained with another model section ({'; '.join(diffs)}); "
            f"its weights fit only its own model: copy the parent's model section into the config")


def load_parent(config: Config, run_dir) -> Parent:
    """Read and check the parent of a new run that trains into ``run_dir``."""
    cfg = config.training
    keep_optimizer = not cfg.init_reset_optimizer
    checkpoint = parent_checkpoint(cfg.init_from, keep_optimizer)
    run_dir = Path(run_dir).resolve()
    # The child's --overwrite would delete a parent inside it; a child inside the parent's run directory
    # would write into it.
    if checkpoint.is_relative_to(run_dir) or (run_dir.is_relative_to(checkpoint.parent)
                                              and is_run_dir(checkpoint.parent)):
        raise TransformerMTError(
            f"'training.init_from' {checkpoint} is inside the output directory {run_dir} or holds it; a run never "
            f"writes into its parent's directory: train into a directory outside it")
    # train has no --checkpoint: the fix of a damaged parent is another one in the config.
    state = ckpt.load_checkpoint(checkpoint, fix="name another checkpoint or run directory in 'training.init_from'")
    parent_config = config_from_dict(state["config"], source=f"config stored in {checkpoint}")
    check_same_model(config, state["config"], checkpoint)
    if config.tokenizer.given_models():
        raise TransformerMTError(
            "'training.init_from' takes the parent's tokenizer; leave 'tokenizer.model' / 'tokenizer.source_model' "
            "/ 'tokenizer.target_model' empty")
    joint = parent_config.tokenizer.joint
    if joint != config.tokenizer.joint:
        raise TransformerMTError(
            f"'training.init_from' {checkpoint} has {'one tokenizer' if joint else 'a tokenizer per language'}: "
            f"set 'tokenizer.joint: {str(joint).lower()}' as the parent has it")
    if parent_config.tokenizer.vocabulary != config.tokenizer.vocabulary:
        raise TransformerMTError(
            f"'training.init_from' {checkpoint} numbers its pieces with 'tokenizer.vocabulary: "
            f"{parent_config.tokenizer.vocabulary}'; set it so in the config, as the parent has it")
    if keep_optimizer and "optimizer" not in state:
        raise TransformerMTError(
            f"'training.init_reset_optimizer: false' keeps the parent's optimizer state, but {checkpoint} holds only "
            f"weights; name the parent's checkpoint_last.pt (or its run directory) in 'training.init_from'")
    src, tgt = tokenizer_paths(checkpoint.parent, parent_config.tokenizer.joint)
    for path in dict.fromkeys((src, tgt)):
        if not path.is_file():
            raise TransformerMTError(f"'training.init_from' {checkpoint}: its tokenizer {path} is missing; a parent "
                                     f"needs its whole run directory")
    ids = ids_paths(checkpoint.parent) if parent_config.tokenizer.vocabulary != "sentencepiece" else None
    ckpt.check_tokenizer_checksums(state, src, tgt, checkpoint, ids_paths=ids)
    origin = f"the tokenizer of 'training.init_from' {checkpoint.parent}"
    return Parent(checkpoint, file_sha256(checkpoint), state, ((src, origin), (tgt, origin)))
