"""transformer-mt: train, run and score encoder-decoder Transformer translation models.

Modules, one concept each:
    config      YAML -> typed dataclasses, validated
    tokenizer   SentencePiece models and text <-> ids
    corpus      parallel text files -> checked, encoded, memory-mapped id arrays (streamed, cached)
    data        token-based batches from encoded corpora
    model       the Transformer (Vaswani et al. 2017) with an incremental-decoding cache
    kernels     CPU performance kernels (oneDNN linear layers, fast dropout masks), with a switch
    loss        label-smoothed cross-entropy
    search      greedy and beam search
    checkpoint  atomic saving, safe loading with clear errors, averaging, upgrading
    rundir      run directories: marker, lock, the files a run owns
    trainer     the training loop
    translator  the batched translation API
    batching    dynamic batching of concurrent requests (a queue and a decoding thread)
    export      export to CTranslate2 (optional extra [export])
    plotting    learning curves of runs (optional extra [plots])
    ct2_translator  translate with an exported CTranslate2 model, like a Translator
    server      the REST API of `transformer-mt serve` (optional extra [serve])
    scoring     sacreBLEU BLEU / chrF
    cli         the transformer-mt command
"""

from .config import Config, load_config
from .decoding.translator import Translator
from .errors import TransformerMTError
from .training.trainer import Trainer, train

__all__ = ["Config", "load_config", "Trainer", "train", "Translator", "TransformerMTError"]
__version__ = "0.1.0"
