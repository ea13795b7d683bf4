"""A Hugging Face model directory read, and the run directory an import writes: what every format's importer
(marian_import.py, one module per format) shares with the dispatcher (hf_import.py).

Everything read here is data: JSON through ``json``, weights through ``safetensors`` or the
weights-only unpickler (see read_weights). The run directory is written into a folder beside it and
renamed into place, so it appears complete or not at all (write_run_dir).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from .. import model as models
from ..checkpoint import load_torch_file, non_finite_weights, unusable_weights
from ..errors import TransformerMTError
from ..files import file_problem
from ..safe_files import (
    amount,
    check_output_folder,
    current_umask,
    make_temporary_folder,
    open_user_file,
    read_user_file,
    remove,
    remove_empty_folder,
    rename,
)

MAX_JSON_BYTES = 64 << 20  # a vocab.json of 250k pieces is ~6 MB
# A safetensors file starts with the size of its JSON header (8 bytes, little-endian), then the header; the
# safetensors library refuses a header of more than this itself.
MAX_SAFETENSORS_HEADER_BYTES = 100_000_000


def read_json(hf_dir: Path, name: str, required: bool = True):
    """A JSON file of the model directory, or None when it is optional and absent."""
    path = hf_dir / name
    if not path.exists() and not path.is_symlink() and not required:
        return None
    problem = file_problem(path, "a JSON file")
    if problem is None and path.stat().st_size > MAX_JSON_BYTES:
        problem = f"is larger than {MAX_JSON_BYTES >> 20} MiB"
    if problem is not None:
        raise TransformerMTError(f"{path} {problem}; give a Hugging Face model directory (config.json, weights, "
                                 f"tokenizer files)")
    try:
        # by descriptor (no foreign link), bounded
        return json.loads(read_user_file(path, "file", limit=MAX_JSON_BYTES,
                                         fix="a model's JSON files are a few MB: download it again").decode("utf-8"))
    except RecursionError:  # a few hundred kB of brackets: no model's JSON nests more than a few levels
        raise TransformerMTError(f"{path} nests its brackets too deeply to be a model's JSON file; download it "
                                 f"again") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise TransformerMTError(f"{path} is not valid JSON ({type(exc).__name__}); download it again") from None


def read_weights(hf_dir: Path) -> tuple[dict[str, torch.Tensor], Path]:
    """The tensors of ``model.safetensors`` (preferred) or ``pytorch_model.bin``, read without running code, and
    checked finite (NaN weights would import and translate to garbage)."""
    weights, path = _read_weights(hf_dir)
    problem = unusable_weights(weights) or non_finite_weights(weights)
    if problem is not None:
        raise TransformerMTError(f"{path}: {problem}; the model is damaged: download it again")
    return weights, path


def _read_weights(hf_dir: Path) -> tuple[dict[str, torch.Tensor], Path]:
    safetensors_path, bin_path = hf_dir / "model.safetensors", hf_dir / "pytorch_model.bin"
    if safetensors_path.exists():
        problem = file_problem(safetensors_path, "a safetensors file")
        if problem:
            raise TransformerMTError(f"{safetensors_path} {problem}")
        try:
            from safetensors import safe_open
        except ImportError:
            raise TransformerMTError("reading model.safetensors needs the safetensors package: pip install "
                                     "'transformer-mt[import]'") from None
        with open_user_file(safetensors_path, "weights file") as handle:  # by descriptor: no foreign link
            _check_safetensors_fits(handle, safetensors_path)
            try:
                # Mapped through the descriptor (the very file checked): each tensor is copied out as it is
                # asked for, the file is never read whole.
                with safe_open(f"/proc/self/fd/{handle.fileno()}", framework="pt", device="cpu") as tensors:
                    return {name: tensors.get_tensor(name) for name in tensors.keys()}, safetensors_path
            except Exception as exc:  # noqa: BLE001 -- safetensors raises its own error types for damaged files
                raise TransformerMTError(f"{safetensors_path} is not a readable safetensors file "
                                         f"({type(exc).__name__}); download it again") from None
    if bin_path.exists():
        problem = file_problem(bin_path, "a PyTorch weights file")
        if problem:
            raise TransformerMTError(f"{bin_path} {problem}")
        try:
            with open_user_file(bin_path, "weights file") as handle:
                weights = load_torch_file(handle, str(bin_path), map_location="cpu")
        except TransformerMTError:
            raise
        except Exception as exc:  # noqa: BLE001 -- refused pickles and damaged files alike
            raise TransformerMTError(
                f"{bin_path} was not loaded: it is damaged, or holds Python objects beyond tensors (which a "
                f"weights file never needs, so it may be crafted to run code) ({type(exc).__name__})") from None
        if not isinstance(weights, dict) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
            raise TransformerMTError(f"{bin_path} is not a dict of tensors; it is not a model's weights")
        return weights, bin_path
    raise TransformerMTError(f"{hf_dir} has no model.safetensors or pytorch_model.bin; give a Hugging Face model "
                             f"directory with its weights")


def _check_safetensors_fits(handle, path: Path) -> None:
    """Refuse a safetensors file from its header, before any tensor is allocated: a header larger than the
    format allows, tensors past the end of the file (truncated), or more bytes of tensors than this machine's
    memory (a sparse or crafted file may declare terabytes)."""
    damaged = f"{path} is not a readable safetensors file"
    size = os.fstat(handle.fileno()).st_size
    prefix = handle.read(8)
    header_size = int.from_bytes(prefix, "little") if len(prefix) == 8 else -1
    if not 0 < header_size <= min(MAX_SAFETENSORS_HEADER_BYTES, size - 8):
        raise TransformerMTError(f"{damaged}: its header size ({header_size:,} bytes, in a file of {size:,} bytes) is "
                                 f"not "
                                 f"one the format allows (at most {amount(MAX_SAFETENSORS_HEADER_BYTES)}); download "
                                 f"it again")
    try:
        header = json.loads(handle.read(header_size))
        ends = [int(entry["data_offsets"][1]) for key, entry in header.items() if key != "__metadata__"]
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, RecursionError):
        raise TransformerMTError(f"{damaged}: its header is not the JSON table of tensors the format has; download "
                                 f"it again") from None
    finally:
        handle.seek(0)
    needed = max(ends, default=0)
    if 8 + header_size + needed != size:  # the format has nothing after the tensors
        raise TransformerMTError(f"{damaged}: its header declares {amount(needed)} of tensors, but the file holds "
                                 f"{amount(size - 8 - header_size)} after it ("
                                 f"{'truncated' if 8 + header_size + needed > size else 'something was added'}); "
                                 f"download it again")
    memory = models._physical_memory()
    if memory is not None and needed > memory:
        raise TransformerMTError(f"{path} holds {amount(needed)} of tensors, more than this machine's memory "
                                 f"({amount(memory)}); it was not loaded: import it on a machine with more memory")


def check_output_dir(output_dir: Path) -> None:
    check_output_folder(output_dir, "--output-dir")  # a link of another user on the way is refused
    if output_dir.is_symlink() or (output_dir.exists() and not output_dir.is_dir()):
        raise TransformerMTError(f"import output {output_dir} exists and is not a directory; choose a new directory")
    if output_dir.is_dir() and any(output_dir.iterdir()):
        raise TransformerMTError(f"import output directory {output_dir} is not empty; choose a new directory (an "
                                 f"import never overwrites files)")


def write_run_dir(output_dir: Path, write) -> Path:
    """Call ``write(folder)`` on a folder beside ``output_dir`` and rename it into place when done, so the run
    directory appears complete or not at all."""
    output_dir = Path(output_dir)
    check_output_dir(output_dir)
    tmp = None
    try:
        # Its folders created and the new folder made by descriptor (safe_files): never through another user's
        # link on the way, under an unpredictable name, with the mode a plain mkdir gives.
        tmp = make_temporary_folder(output_dir, mode=0o777 & ~current_umask(), option="--output-dir")
        write(tmp)
        check_output_dir(output_dir)
        if output_dir.is_dir():
            remove_empty_folder(output_dir, "--output-dir")
        rename(tmp, output_dir, "--output-dir")
    except OSError as exc:
        raise TransformerMTError(f"could not write {output_dir}: {exc.strerror or exc}") from None
    finally:
        if tmp is not None:
            remove(tmp, ignore_errors=True)
    return output_dir
