"""Checkpoints: atomic writes, clear errors on load, and averaging.

A checkpoint is written to a temporary file in the same directory, flushed
and fsynced, then renamed over the old one, so a crash or a full disk at any
moment leaves the previous checkpoint intact and readable.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path

import torch

from .errors import TransformerMTError

FORMAT_VERSION = 1


def atomic_save(obj, path) -> None:
    """torch.save to ``path`` atomically: tmp file + fsync + rename (+ fsync of the directory)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise TransformerMTError(
            f"could not write checkpoint {path}: {exc.strerror or exc}; the previous checkpoint (if any) "
            f"is unchanged. Free disk space or choose another --output-dir, then resume with --resume"
        ) from None
    try:
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass  # some file systems cannot fsync directories; the rename is still atomic


def load_checkpoint(path, map_location="cpu") -> dict:
    """Load a checkpoint written by ``atomic_save``; any corruption becomes one clear error."""
    path = Path(path)
    if not path.is_file():
        raise TransformerMTError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError, OSError,
            AttributeError, ImportError, IndexError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise TransformerMTError(
            f"checkpoint {path} is corrupt or truncated ({type(exc).__name__}); use another checkpoint "
            f"of the run (e.g. --checkpoint last) or train again"
        ) from None
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise TransformerMTError(f"{path} is not a transformer-mt checkpoint (no model/config inside)")
    if state.get("format_version") != FORMAT_VERSION:
        raise TransformerMTError(
            f"checkpoint {path} has format version {state.get('format_version')}, this transformer-mt "
            f"reads version {FORMAT_VERSION}; use the transformer-mt version that wrote it"
        )
    return state


def average_state_dicts(state_dicts: list[dict]) -> dict:
    """Element-wise mean of model state dicts (floating tensors; others taken from the last)."""
    if not state_dicts:
        raise TransformerMTError("no checkpoints to average")
    keys = list(state_dicts[-1].keys())
    for i, sd in enumerate(state_dicts):
        if list(sd.keys()) != keys:
            raise TransformerMTError(f"checkpoint {i} to average has different parameters than the others")
    averaged = {}
    for key in keys:
        tensors = [sd[key] for sd in state_dicts]
        if tensors[-1].is_floating_point():
            total = torch.zeros_like(tensors[-1], dtype=torch.float64)
            for t in tensors:
                total += t.to(torch.float64)
            averaged[key] = (total / len(tensors)).to(tensors[-1].dtype)
        else:
            averaged[key] = tensors[-1].clone()
    return averaged


def average_checkpoints(paths: list, output_path) -> dict:
    """Average the model weights of several checkpoints of one run and save the result atomically."""
    states = [load_checkpoint(p) for p in paths]
    averaged = dict(states[-1])
    averaged["model"] = average_state_dicts([s["model"] for s in states])
    averaged["averaged_from"] = [str(p) for p in paths]
    for key in ("optimizer", "scheduler", "rng", "data_position"):
        averaged.pop(key, None)
    atomic_save(averaged, output_path)
    return averaged
