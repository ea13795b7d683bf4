"""transformer-mt: train, run and score encoder-decoder Transformer translation models.

Subpackages group modules by job; each module has one:
    config  errors  files  device  results  scoring   the ground floor, used by everyone
    model  kernels  checkpoint  safe_files      the Transformer, its CPU kernels, safe files and writes
    data/       tokenizer, tokenizer_files, corpus (memory-mapped ids), batches, mixing (several corpora),
                sampling (subword regularization), back_translation
    training/   trainer (the loop), run_data, checkpoint_state, validation, stopping, schedule, loss, ema,
                init_from, rundir, distributed, metrics, plotting
    decoding/   search, logits (sampling, n-gram blocking, penalties), translator (the API),
                ensemble, alignment, paragraphs (texts, HTML, documents through the translator)
    text/       segment (sentences), html, documents (.txt .html .srt .docx), language_id
    serving/    server, limits, batching (dynamic), libretranslate (its API), uploads
    interop/    ctranslate2_export, ct2_translator, hf_import, hf_files, marian_import (OPUS-MT)
    cli         the transformer-mt command
"""

from .config import Config, load_config
from .decoding.translator import Translator
from .errors import TransformerMTError
from .training.trainer import Trainer, train

__all__ = ["Config", "load_config", "Trainer", "train", "Translator", "TransformerMTError"]
__version__ = "0.1.0"
