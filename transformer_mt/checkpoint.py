"""Checkpoints: atomic writes, safe loading with clear errors, averaging, upgrading old files.

A checkpoint is written to a temporary file in the same directory, flushed
and fsynced, then renamed over the old one, so a crash or a full disk at any
moment leaves the previous checkpoint intact and readable.

Loading never runs code. A checkpoint (format 2) holds only tensors and plain
values (dicts, lists, tuples, numbers, strings), and every load goes through
``torch.load(weights_only=True)``, PyTorch's allow-list unpickler: a file that
would need any other Python object to be imported and called (the way a
crafted pickle runs ``os.system``) is refused before anything in it runs.
Format 1 files (transformer-mt before the safe format) pickled the numpy RNG
state and so cannot be loaded that way; ``upgrade_checkpoint`` converts one
the user trusts, once, on explicit request, allowing exactly the numpy types
of that state and nothing else.
"""

from __future__ import annotations

import errno
import os
import pickle
import pickletools
import re
import stat
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch

from . import model as models
from .errors import TransformerMTError
from .files import file_sha256
from .safe_files import amount, open_user_file

FORMAT_VERSION = 2

# Config keys that may differ between checkpoints of one run, or between a run and its
# resumption: budgets, logging, hardware and decoding. Any other difference means the
# weights were trained for another model, data or optimizer.
RESUMABLE_CHANGES = {
    "data": {"num_workers", "cache_dir"},  # how and where corpora are encoded, not what they hold
    "training": {"max_steps", "max_epochs", "max_minutes", "patience", "validate_every", "log_every", "device",
                 "num_threads", "keep_last_n", "average_last_n", "compile", "max_nonfinite_in_row", "tensorboard"},
    "decoding": {"beam_size", "length_penalty", "max_length_a", "max_length_b", "batch_size", "nbest", "early_exit",
                 "valid_beam_size", "sacrebleu_tokenize"},
}


def config_differences(old: dict, new: dict) -> list[str]:
    """``section.key: old -> new`` for every difference that is not in RESUMABLE_CHANGES.

    A key that ``old`` (a config saved by an older version) lacks counts as its default value,
    so adding a key never makes older runs impossible to resume.
    """
    from .config import Config

    defaults = Config().to_dict()
    old = {section: {**defaults.get(section, {}), **values} for section, values in old.items()}
    diffs = []
    for section, values in new.items():
        for key, value in values.items():
            if key in RESUMABLE_CHANGES.get(section, ()):
                continue
            if old.get(section, {}).get(key) != value:
                diffs.append(f"{section}.{key}: {old.get(section, {}).get(key)!r} -> {value!r}")
    return diffs


def tokenizer_checksums(src_model_path, tgt_model_path, ids_paths: tuple | None = None) -> dict:
    """SHA-256 of the SentencePiece model files (and of the id lists of an imported model's tokenizers,
    ``ids_paths``): a checkpoint only fits the tokenizer it was trained with."""
    sums = {"src": file_sha256(src_model_path), "tgt": file_sha256(tgt_model_path)}
    if ids_paths is not None:
        sums.update(src_ids=file_sha256(ids_paths[0]), tgt_ids=file_sha256(ids_paths[1]))
    return sums


def check_tokenizer_checksums(state: dict, src_model_path, tgt_model_path, checkpoint_path,
                              actual: dict | None = None, ids_paths: tuple | None = None) -> None:
    """Refuse a tokenizer that is not the one the checkpoint was trained with (same size is not enough).

    ``actual``: the files' checksums when the caller has computed them already.
    """
    expected = state.get("tokenizer_sha256")
    if expected is None:
        return  # upgraded from format 1 without its run's tokenizer beside it: nothing to compare
    actual = actual or tokenizer_checksums(src_model_path, tgt_model_path, ids_paths)
    files = [("src", src_model_path), ("tgt", tgt_model_path)]
    if ids_paths is not None or "src_ids" in expected:
        files += [("src_ids", ids_paths and ids_paths[0]), ("tgt_ids", ids_paths and ids_paths[1])]
    for side, path in files:
        if actual.get(side) != expected.get(side):
            raise TransformerMTError(
                f"tokenizer {path} is not the one checkpoint {checkpoint_path} was trained with (SHA-256 "
                f"{str(actual.get(side))[:12]}... instead of {str(expected.get(side))[:12]}...); the run directory "
                f"mixes files of two runs. Copy the whole run directory of the checkpoint, tokenizer included"
            )


def numpy_rng_state_to_plain(state: tuple) -> dict:
    """numpy's legacy RNG state (which holds an ndarray, not loadable safely) as a tensor and plain values."""
    name, key, pos, has_gauss, cached_gaussian = state
    return {"bit_generator": str(name), "key": torch.from_numpy(np.asarray(key, dtype=np.int64)),
            "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)}


def numpy_rng_state_from_plain(state: dict) -> tuple:
    return (state["bit_generator"], state["key"].numpy().astype(np.uint32), state["pos"], state["has_gauss"],
            state["cached_gaussian"])


def atomic_save(obj, path, user_output: bool = False) -> None:
    """torch.save to ``path`` atomically: mkstemp file + fsync + rename (+ fsync of the directory).

    ``path`` is a run directory's file (never written through a link), or with ``user_output`` a
    file the user named (``average --output``: safe_files.write_output's rules).
    """
    from .safe_files import write_output, write_run_file

    path = Path(path)
    try:
        if user_output:
            write_output(path, lambda handle: torch.save(obj, handle), option="--output", durable=True)
        else:
            write_run_file(path, lambda handle: torch.save(obj, handle), durable=True)
    except (OSError, RuntimeError) as exc:
        # torch.save reports a full disk as RuntimeError ("file write failed"), open() as OSError.
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).splitlines()[0]
        raise TransformerMTError(
            f"could not write checkpoint {path}: {reason}; the previous checkpoint (if any) is unchanged. "
            f"Free disk space or make the directory writable (or choose another --output-dir), then resume"
        ) from None


# What format 1 pickled besides allowed types: the numpy RNG state's uint32 array. Upgrading
# allows exactly these (by the names the pickle uses), so even a trusted file cannot run code.
_RECONSTRUCT = np.zeros(1).__reduce__()[0]
# (object, name): files pickled under numpy 1 name the array constructor numpy.core..., numpy 2 numpy._core...
FORMAT1_GLOBALS = (np.ndarray, np.dtype, type(np.dtype(np.uint32)),
                   (_RECONSTRUCT, "numpy.core.multiarray._reconstruct"),
                   (_RECONSTRUCT, "numpy._core.multiarray._reconstruct"))
FORMAT1_GLOBAL_NAMES = {"numpy.ndarray", "numpy.dtype", "numpy.dtypes.UInt32DType",
                        "numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct"}


def _plain_pickle_globals(path) -> list[str]:
    """The objects a plain pickle file (not torch's zip format; maybe several pickles one after another, as
    torch's legacy format) imports, read with pickletools without running anything."""
    names, strings = [], []
    try:
        from .safe_files import open_for_reading

        with open_for_reading(path, wait_for_a_writer=False) as handle:
            while handle.peek(1) if hasattr(handle, "peek") else False:
                for opcode, arg, _ in pickletools.genops(handle):
                    if isinstance(arg, str):
                        strings.append(arg)
                    if opcode.name == "GLOBAL":
                        names.append(arg.replace(" ", "."))
                    elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                        names.append(f"{strings[-2]}.{strings[-1]}")
    except Exception:  # noqa: BLE001 -- damaged: whatever was found so far
        pass
    return names


class EarlierFormat(TransformerMTError):
    """A checkpoint of format 1, which ``upgrade_checkpoint --trust`` converts (any other refusal is no earlier
    format: a damaged or crafted file is not one to convert)."""


class UnsafeCheckpoint(TransformerMTError):
    """A checkpoint that holds Python objects loading would import and call: refused, never converted."""


def _unsafe_globals(path, exc: Exception) -> list[str]:
    """The Python objects a refused pickle wants to import (read without running it); [] if it is damaged."""
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # noqa: BLE001 -- an unreadable file: fall back to what the refusal said
        names = []
    if not names and not zipfile.is_zipfile(path):
        names = _plain_pickle_globals(path)
    if not names:
        names = re.findall(r"GLOBAL ([\w.]+)", str(exc))
    # The ones that are not format 1's numpy types first: those are what a message must name.
    return sorted(set(names), key=lambda name: (name in FORMAT1_GLOBAL_NAMES, name))


ANOTHER_CHECKPOINT = "use another checkpoint of the run (e.g. --checkpoint last) or train again"
# The pickle of a torch file holds its structure (dicts, the config, names); the tensors are entries of their own.
# Ours are a few kB; unpickled objects take many times the pickle's bytes, so a large one is refused unread.
MAX_PICKLE_BYTES = 64 << 20


def load_torch_file(handle, name: str, **kwargs):
    """``torch.load(handle, weights_only=True, **kwargs)`` after an estimate of the memory loading takes,
    made before anything is allocated (see :func:`check_torch_file_fits`). ``name`` names the file in
    messages ("checkpoint runs/a/checkpoint_best.pt")."""
    handle.seek(0)
    start = handle.read(4)
    handle.seek(0)
    if not (start.startswith(b"PK\x03\x04") or start.startswith(b"\x80")):  # torch.save's zip, or its older pickle
        what = "is empty" if not start else "is not a PyTorch file (torch.save writes a zip archive)"
        raise TransformerMTError(f"{name} {what}; is it the right file?")
    check_torch_file_fits(handle, name)
    loaded = torch.load(handle, weights_only=True, **kwargs)
    for tensor in _tensors_in(loaded):
        check_tensor_holds_its_values(tensor, name)
    return loaded


def _tensors_in(value, depth: int = 0):
    """Every tensor in ``value`` and the dicts, lists and tuples in it (a checkpoint nests three or four deep)."""
    if isinstance(value, torch.Tensor):
        yield value
    elif depth < 32 and isinstance(value, dict):
        for item in value.values():
            yield from _tensors_in(item, depth + 1)
    elif depth < 32 and isinstance(value, (list, tuple)):
        for item in value:
            yield from _tensors_in(item, depth + 1)


def check_tensor_holds_its_values(tensor: torch.Tensor, name: str) -> None:
    """Refuse a tensor with more values than its storage holds: a view with stride 0 (``expand``) of a few bytes
    stored can stand for terabytes, which the first operation on it (a copy, a finiteness check) would allocate.
    A tensor saved by training always owns its values. (Sparse and meta tensors have no such storage: they are
    refused by name where weights are checked, unusable_weights.)"""
    if tensor.layout != torch.strided or tensor.is_meta:
        return
    stored = tensor.untyped_storage().nbytes() - tensor.storage_offset() * tensor.element_size()
    if tensor.numel() * tensor.element_size() > max(stored, 0):
        raise TransformerMTError(f"{name} holds a tensor of {tensor.numel():,} values ({list(tensor.shape)}) over "
                                 f"{amount(max(stored, 0))} of stored data (a view with repeated strides, as no "
                                 f"training writes); it is damaged or crafted, and was not loaded")


def check_torch_file_fits(handle, name: str) -> None:
    """Refuse a torch file whose tensors would not fit this machine's memory once loaded, from its zip
    directory (each tensor is an entry, its size recorded there), or from its size for the older plain-pickle
    format; and one whose pickle is far larger than any checkpoint's structure. A sparse or crafted file
    that declares terabytes is refused here, not by the kernel's out-of-memory killer."""
    needed, pickled = os.fstat(handle.fileno()).st_size, 0
    try:
        with zipfile.ZipFile(handle) as archive:  # given a handle, ZipFile leaves it open
            entries = archive.infolist()
            needed = sum(entry.file_size for entry in entries)
            pickled = sum(entry.file_size for entry in entries if entry.filename.endswith(".pkl"))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError):
        pass  # not a zip: torch's older format, or damaged (torch.load says which)
    finally:
        handle.seek(0)
    if pickled > MAX_PICKLE_BYTES:
        raise TransformerMTError(f"{name} holds a pickle of {amount(pickled)}, where a checkpoint's is a few kB "
                                 f"(its tensors are stored beside it); it is damaged or crafted, and was not loaded")
    memory = models._physical_memory()
    if memory is not None and needed > memory:
        raise TransformerMTError(f"{name} holds {amount(needed)} of tensors, more than this machine's memory "
                                 f"({amount(memory)}); it was not loaded: use a machine with more memory, or check "
                                 f"that it is the right file (a damaged one may declare sizes it does not hold)")


def load_checkpoint(path, map_location="cpu", fix: str = ANOTHER_CHECKPOINT) -> dict:
    """Load a checkpoint without running any code in it; damage or unsafe content becomes one clear error.
    ``fix``: what the user can do about a damaged file where it was named (translate's --checkpoint, ...)."""
    path = Path(path)
    from .safe_files import regular_file_problem

    problem = regular_file_problem(path)  # a FIFO or device is no checkpoint, and reading it may never end
    if problem is not None:
        raise TransformerMTError(f"checkpoint {path} {problem.replace('expected a file', 'expected a checkpoint file')}")
    try:
        with warnings.catch_warnings():  # torch warns about a plain pickle's protocol before refusing it
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            with open_user_file(path, "checkpoint") as handle:  # by descriptor: never another user's link
                state = load_torch_file(handle, f"checkpoint {path}", map_location=map_location)
    except pickle.UnpicklingError as exc:
        unsafe = _unsafe_globals(path, exc)
        if not unsafe:
            raise TransformerMTError(f"checkpoint {path} is corrupt or truncated (unreadable pickle); {fix}") from None
        if set(unsafe) <= FORMAT1_GLOBAL_NAMES:
            raise EarlierFormat(
                f"checkpoint {path} was written by transformer-mt before checkpoint format {FORMAT_VERSION} (it "
                f"pickles a numpy array) and was not loaded; if you made it or trust its source, convert it once "
                f"with: transformer-mt upgrade-checkpoint --trust {path}") from None
        raise UnsafeCheckpoint(
            f"checkpoint {path} was not loaded: it holds Python objects ({', '.join(unsafe[:3])}) that loading "
            f"would import and call, which no transformer-mt checkpoint does, so it may be unsafe (crafted to run "
            f"code). Do not open it with torch.load(weights_only=False) or other tools either") from None
    except OSError as exc:
        if not isinstance(exc, PermissionError) and exc.errno != errno.EIO:  # a truncated file gives EINVAL on seek
            raise TransformerMTError(f"checkpoint {path} is corrupt or truncated ({type(exc).__name__}); {fix}") from None
        # Permissions, an I/O error: the file may be fine, it could not be read.
        raise TransformerMTError(f"checkpoint {path} cannot be read: {exc.strerror}; make it readable (check its "
                                 f"permissions and the disk), or {fix}") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, AttributeError, ImportError,
            IndexError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise TransformerMTError(f"checkpoint {path} is corrupt or truncated ({type(exc).__name__}); {fix}") from None
    return _check_state(state, path)


def _check_state(state, path) -> dict:
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise TransformerMTError(f"{path} is not a transformer-mt checkpoint (no model/config inside)")
    if state.get("format_version") == 1:
        raise EarlierFormat(
            f"checkpoint {path} was written by transformer-mt before checkpoint format {FORMAT_VERSION}; if you "
            f"made it or trust its source, convert it once with: transformer-mt upgrade-checkpoint --trust {path}")
    version = state.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise TransformerMTError(f"checkpoint {path} is damaged: its format version {str(version)[:40]!r} is not a "
                                 f"number")
    if version != FORMAT_VERSION:
        raise TransformerMTError(
            f"checkpoint {path} has format version {version}, this transformer-mt "
            f"reads version {FORMAT_VERSION}; use the transformer-mt version that wrote it"
        )
    if not isinstance(state["model"], dict) or not all(isinstance(v, torch.Tensor) for v in state["model"].values()):
        raise TransformerMTError(f"checkpoint {path} is damaged: its model entry is not a dict of tensors")
    problem = unusable_weights(state["model"])
    for key in ("vocab_sizes", "tokenizer_sha256"):  # read as mappings by whoever loads the checkpoint
        if not isinstance(state.get(key, {}), (dict, type(None))):
            problem = problem or f"its '{key}' is a {type(state[key]).__name__}, not a mapping"
    if problem is not None:
        raise TransformerMTError(f"checkpoint {path} is damaged: {problem}; use another checkpoint of the run, or "
                                 f"train again")
    problem = non_finite_weights(state["model"])
    if problem is not None:
        raise TransformerMTError(f"checkpoint {path}: {problem}, so every translation from it would be garbage; the "
                                 f"file is damaged or was saved from a diverged model: use another checkpoint of the "
                                 f"run, or train again")
    return state


def unusable_weights(weights: dict) -> str | None:
    """What keeps ``weights`` from being a model's (the first tensor, by name): a sparse or meta tensor, or a type
    no layer computes in (bool, complex, integers: every weight of these models is floating point, and loading
    would convert integers silently into weights that translate nonsense); None when they are usable (their
    values: non_finite_weights)."""
    for name, tensor in weights.items():
        if isinstance(tensor, torch.Tensor):
            if tensor.layout != torch.strided or tensor.is_meta:
                return f"weight {name} is a {'meta' if tensor.is_meta else 'sparse'} tensor, which holds no weights"
            if not tensor.is_floating_point():
                return f"weight {name} is of type {tensor.dtype}, where every weight of a model is floating point"
    return None


def non_finite_weights(weights: dict) -> str | None:
    """What is wrong when a floating tensor of ``weights`` holds NaN or infinity (the first one, by name), else
    None. One pass over each tensor, once, where weights are loaded."""
    for name, tensor in weights.items():
        if isinstance(tensor, torch.Tensor) and tensor.is_floating_point() and tensor.numel():
            finite = torch.isfinite(tensor)
            if not bool(finite.all()):
                bad = int(finite.numel() - finite.sum())
                return (f"weight {name} holds {bad:,} of {tensor.numel():,} values that are NaN or infinite "
                        f"(not finite)")
    return None


def average_state_dicts(state_dicts: list[dict]) -> dict:
    """Element-wise mean of model state dicts (floating tensors; others taken from the last)."""
    if not state_dicts:
        raise TransformerMTError("no checkpoints to average")
    keys = list(state_dicts[-1].keys())
    for i, sd in enumerate(state_dicts):
        if list(sd.keys()) != keys:
            raise TransformerMTError(f"checkpoint {i} to average has different parameters than the others")
        for key in keys:
            if sd[key].shape != state_dicts[-1][key].shape:
                raise TransformerMTError(
                    f"checkpoint {i} to average has parameter {key} of shape {tuple(sd[key].shape)}, the last "
                    f"has {tuple(state_dicts[-1][key].shape)}; only checkpoints of one model can be averaged")
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


def _check_same_run(states: list[dict], paths: list) -> None:
    """Averaging weights of different models, vocabularies or tokenizers gives garbage: refuse it."""
    last, last_path = states[-1], paths[-1]
    for state, path in zip(states[:-1], paths[:-1]):
        diffs = config_differences(state["config"], last["config"])
        if diffs:
            raise TransformerMTError(
                f"cannot average {path} with {last_path}: trained with different configs ({'; '.join(diffs[:3])})")
        if state.get("vocab_sizes") != last.get("vocab_sizes"):
            raise TransformerMTError(
                f"cannot average {path} (vocabulary sizes {state.get('vocab_sizes')}) with {last_path} "
                f"({last.get('vocab_sizes')}): they belong to different runs")
        if state.get("tokenizer_sha256") != last.get("tokenizer_sha256"):
            raise TransformerMTError(
                f"cannot average {path} with {last_path}: they were trained with different tokenizers")


def average_checkpoints(paths: list, output_path, user_output: bool = False) -> dict:
    """Average the model weights of several checkpoints of one run and save the result atomically."""
    states = [load_checkpoint(p) for p in paths]
    _check_same_run(states, paths)
    averaged = dict(states[-1])
    averaged["model"] = average_state_dicts([s["model"] for s in states])
    averaged["averaged_from"] = [str(p) for p in paths]
    for key in ("optimizer", "scheduler", "scaler", "rng", "rng_per_rank", "data_position", "log_positions",
                "raw_model", "ema_updates"):
        averaged.pop(key, None)
    atomic_save(averaged, output_path, user_output=user_output)
    return averaged


def upgrade_checkpoint(path, trust: bool) -> bool:
    """Convert a format-1 checkpoint the user trusts into the safe format, in place.

    Format 1 pickled a numpy array; the weights-only unpickler reads it here with exactly the
    numpy types that array needs allowed, so a file holding anything else is still refused.
    The conversion happens only with ``trust`` all the same: it rewrites the user's files. The
    original is kept beside it as ``<name>.format1``. Returns False when the file is already
    in the current format. The SentencePiece model(s) beside the checkpoint, if there, are
    recorded as its tokenizer.
    """
    from .data.tokenizer_files import tokenizer_paths

    path = Path(path)
    try:
        current = load_checkpoint(path)["format_version"] == FORMAT_VERSION
    except UnsafeCheckpoint as exc:  # crafted, not an earlier format: --trust is not the advice
        raise TransformerMTError(f"checkpoint {path} cannot be upgraded: {str(exc).split(': ', 1)[-1]}") from None
    except EarlierFormat:
        current = False
    except TransformerMTError as exc:  # damaged, truncated, not a checkpoint: nothing to convert, nor to trust
        raise TransformerMTError(f"{exc}; it is not in an earlier format either, so upgrade-checkpoint cannot "
                                 f"convert it") from None
    if current:
        return False
    if not trust:
        raise TransformerMTError(
            f"{path} is in an earlier checkpoint format; converting it rewrites the file (the original is kept "
            f"as {path.name}.format1): pass --trust to confirm that you made it or trust its source")
    try:
        # As in load_checkpoint: torch warns about a plain pickle's protocol asking the user to "file an issue"
        # with PyTorch, which is no advice for a file transformer-mt reads or refuses by itself.
        with torch.serialization.safe_globals(list(FORMAT1_GLOBALS)), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            with open_user_file(path, "checkpoint") as handle:
                state = load_torch_file(handle, f"checkpoint {path}", map_location="cpu")
    except pickle.UnpicklingError as exc:
        unsafe = [name for name in _unsafe_globals(path, exc) if name not in FORMAT1_GLOBAL_NAMES]
        if not unsafe:
            raise TransformerMTError(f"{path} is corrupt or not a checkpoint; nothing was converted") from None
        raise TransformerMTError(
            f"checkpoint {path} cannot be upgraded: besides the numpy RNG state of format 1 it holds "
            f"{', '.join(unsafe[:3])}, which no transformer-mt checkpoint does; it may be crafted to run code "
            f"and was not loaded") from None
    except TransformerMTError:  # refused before loading (too large for this machine)
        raise
    except Exception as exc:  # noqa: BLE001 -- torch raises many types for damaged files
        raise TransformerMTError(f"checkpoint {path} cannot be read ({type(exc).__name__})") from None
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise TransformerMTError(f"{path} is not a transformer-mt checkpoint (no model/config inside)")
    if state.get("format_version") not in (1, FORMAT_VERSION):
        raise TransformerMTError(f"checkpoint {path} has unknown format version {state.get('format_version')}")
    rng = state.get("rng")
    if isinstance(rng, dict) and isinstance(rng.get("numpy"), tuple):
        rng["numpy"] = numpy_rng_state_to_plain(rng["numpy"])
    state["format_version"] = FORMAT_VERSION
    joint = bool(state["config"].get("tokenizer", {}).get("joint", True))
    src_model, tgt_model = tokenizer_paths(path.parent, joint)
    if src_model.is_file() and tgt_model.is_file():
        state["tokenizer_sha256"] = tokenizer_checksums(src_model, tgt_model)
    backup = path.with_name(path.name + ".format1")
    from .safe_files import make_temporary_folder, remove, rename, run_file_problem

    for name in (path, backup):
        if run_file_problem(name):
            raise TransformerMTError(f"{name} {run_file_problem(name)}")
    # A fresh directory of our own beside it (unpredictable name, mode 700) holds the converted file
    # until it is proven to load, so no name someone could plant a link under is ever written.
    folder = make_temporary_folder(path, prefix=f".{path.name}.upgrade-")
    try:
        tmp = folder / path.name
        atomic_save(state, tmp)
        try:
            load_checkpoint(tmp)  # loads safely now, or the original stays as it was
        except TransformerMTError as exc:
            raise TransformerMTError(f"{path} could not be converted to the safe format: {exc}") from None
        os.chmod(tmp, stat.S_IMODE(path.stat().st_mode))
        rename(path, backup)  # by descriptor; neither name is followed
        rename(tmp, path)
    finally:
        remove(folder, ignore_errors=True)
    return True
