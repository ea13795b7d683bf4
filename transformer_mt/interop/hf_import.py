"""Import a Hugging Face model directory as a run directory: ``transformer-mt import HF_DIR --output-dir RUN_DIR``.

The format is found from ``config.json``'s ``model_type``, and each format is one module of this
package (``marian`` -> marian_import.py, OPUS-MT's MarianMT). Another architecture (M2M100, NLLB)
would be one more module and one more line in ``import_model``: no registry to fill.

Everything read is data: JSON through ``json``, weights through ``safetensors`` or the
weights-only unpickler (see hf_files.read_weights), SentencePiece models through SentencePiece.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import TransformerMTError
from .hf_files import check_output_dir, read_json
from .marian_import import import_marian


def import_model(hf_dir, output_dir) -> dict:
    """Import the Hugging Face model in ``hf_dir`` as a run directory ``output_dir``; returns a summary."""
    hf_dir = Path(hf_dir)
    if not hf_dir.is_dir():
        raise TransformerMTError(f"{hf_dir} is not a directory; give a Hugging Face model directory (e.g. a clone "
                                 f"of Helsinki-NLP/opus-mt-de-en)")
    check_output_dir(Path(output_dir))  # before minutes of loading: a link of another user on the way, a full folder
    config = read_json(hf_dir, "config.json")
    if not isinstance(config, dict):
        raise TransformerMTError(f"{hf_dir / 'config.json'} holds a JSON {type(config).__name__}, not an object of "
                                 f"settings (model_type, d_model, ...); download the model again")
    model_type = config.get("model_type")
    if model_type == "marian":
        return import_marian(hf_dir, config, Path(output_dir))
    raise TransformerMTError(f"{hf_dir / 'config.json'}: model_type {model_type!r} cannot be imported; "
                             f"transformer-mt imports 'marian' (OPUS-MT models)")
