"""Typed configuration: one YAML file -> nested dataclasses, validated on load.

Every key is documented in ``configs/reference.yaml``. Validation happens here,
once, so the rest of the code can trust the values: unknown keys (with the
closest valid key suggested), keys given twice, wrong types, non-finite or
out-of-range values and missing data files are reported as one
``TransformerMTError`` naming the key or file.

String values may use ``${VAR}`` or ``${VAR:-default}`` to read environment
variables, e.g. ``root: ${TRANSFORMER_MT_DATA:-../shared/data}/multi30k``.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import reprlib
import typing
from collections.abc import Hashable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .errors import TransformerMTError
from .files import file_problem


@dataclass
class CorpusConfig:
    """One training corpus of ``data.train_corpora``."""

    prefix: str = ""  # files <data.root>/<prefix>.<src_lang> and .<tgt_lang>
    src: str = ""  # or the two files' paths (relative to the working directory), instead of prefix
    tgt: str = ""  # the target file's path, with src
    weight: float = 1.0  # share of each epoch's pairs drawn from this corpus: weight / (sum of the weights)
    tag: str = ""  # a token put before each of its sources (tagged back-translation: e.g. <BT>); "" = none
    # The direction of its pairs (a multilingual run: corpora of several directions train one model, each
    # source starting with its target-language token >>tgt_lang<<); "" = data.src_lang / data.tgt_lang.
    src_lang: str = ""
    tgt_lang: str = ""  # the language of its targets; "" = data.tgt_lang
    # Validation files of its direction, <data.root>/<valid_prefix>.<src_lang> and .<tgt_lang>; "" = data.valid_prefix.
    valid_prefix: str = ""
    test_prefix: str = ""  # test files of its direction (evaluate --split test), as valid_prefix; "" = data.test_prefix

    def direction(self, data: DataConfig) -> tuple[str, str]:
        """(source language, target language) of its pairs."""
        return self.src_lang or data.src_lang, self.tgt_lang or data.tgt_lang

    def files(self, data: DataConfig) -> tuple[Path, Path]:
        if self.prefix:
            src_lang, tgt_lang = self.direction(data)
            return Path(data.root) / f"{self.prefix}.{src_lang}", Path(data.root) / f"{self.prefix}.{tgt_lang}"
        return Path(self.src), Path(self.tgt)


class TrainingFiles(typing.NamedTuple):
    """One training corpus as the data loader reads it (DataConfig.training_files)."""

    src: Path
    tgt: Path
    weight: float
    tag: str  # "" = none
    language_token: str  # the target-language token its sources start with (a multilingual run), "" = none


@dataclass
class DataConfig:
    root: str = "data/demo"  # folder holding {prefix}.{lang} files; relative to the working directory
    src_lang: str = "src"  # source language: the suffix of its files, <prefix>.<src_lang>
    tgt_lang: str = "tgt"  # target language: the suffix of its files, <prefix>.<tgt_lang>
    train_prefix: str = "train"  # training files: <root>/<train_prefix>.<lang>
    valid_prefix: str = "valid"  # validation files (loss, perplexity and BLEU during training)
    test_prefix: str = "test"  # test files (transformer-mt evaluate --split test)
    max_len: int = 256  # training pairs longer than this (in subword tokens) are skipped and counted
    # Share of training pairs whose source ends in punctuation that are added once more with that
    # punctuation removed: corpora where nearly every source ends in "." or "。" teach a model to
    # end its output only after one, so typed input without it ("我爱学习") runs on.
    unpunctuated_copies: float = 0.0
    num_workers: int = 0  # threads that tokenize the corpora when they are encoded; 0 = the cores available
    # Where encoded corpora are cached (memory-mapped .npy files, shared safely by processes that
    # prepare the same corpus at once); relative to the working directory; empty = the run's cache/.
    cache_dir: str = ""
    # Several training corpora mixed in fixed shares (see CorpusConfig); empty = the one corpus of train_prefix.
    train_corpora: list[CorpusConfig] = field(default_factory=list)
    # Subword regularization (training only): each training batch is encoded again from its text with
    # SentencePiece sampling. subword_alpha: BPE-dropout probability (bpe models) or the unigram
    # smoothing alpha; 0 = off. subword_nbest: unigram only, segmentations sampled from (-1: all).
    subword_alpha: float = 0.0
    subword_nbest: int = -1  # unigram only: segmentations sampled from (-1: all; e.g. 64)
    # Temperature sampling of data.train_corpora (multilingual runs): T > 0 gives corpus i the share
    # weight_i * size_i ** (1 / T) of each epoch, normalised (T = 1: in proportion to its size; 5: small
    # directions drawn more often; large T: even shares); 0 = off, the shares are the weights alone.
    sampling_temperature: float = 0.0

    def training_files(self) -> list[TrainingFiles]:
        """The files, weight, tag and target-language token of each training corpus."""
        if not self.train_corpora:
            return [TrainingFiles(self.path("train", self.src_lang), self.path("train", self.tgt_lang), 1.0, "", "")]
        tokens = self.multilingual()
        return [TrainingFiles(*corpus.files(self), corpus.weight, corpus.tag,
                              language_token(corpus.direction(self)[1]) if tokens else "")
                for corpus in self.train_corpora]

    def tags(self) -> list[str]:
        """The distinct tags of the training corpora, in order."""
        return list(dict.fromkeys(corpus.tag for corpus in self.train_corpora if corpus.tag))

    def directions(self) -> list[tuple[str, str]]:
        """The distinct (source, target) language pairs of the training corpora, in order: what the model
        translates (one pair: data.src_lang -> data.tgt_lang)."""
        if not self.train_corpora:
            return [(self.src_lang, self.tgt_lang)]
        return list(dict.fromkeys(corpus.direction(self) for corpus in self.train_corpora))

    def multilingual(self) -> bool:
        """Several directions: each source starts with its target-language token."""
        return len(self.directions()) > 1

    def target_languages(self) -> list[str]:
        """The distinct target languages, in the order of the directions."""
        return list(dict.fromkeys(target for _, target in self.directions()))

    def language_tokens(self) -> list[str]:
        """The target-language tokens (``>>fr<<``) of a multilingual run's sources; none for one direction."""
        return [language_token(target) for target in self.target_languages()] if self.multilingual() else []

    def symbols(self) -> list[str]:
        """The pieces a trained source tokenizer must keep whole: target-language tokens, then corpus tags."""
        return self.language_tokens() + self.tags()

    def path(self, split: str, lang: str) -> Path:
        prefix = {"train": self.train_prefix, "valid": self.valid_prefix, "test": self.test_prefix}[split]
        return Path(self.root) / f"{prefix}.{lang}"

    def split_files(self, split: str, direction: tuple[str, str]) -> tuple[Path, Path]:
        """The (source, target) files of ``split`` ("valid" or "test") for ``direction``: those of its corpora's
        valid_prefix / test_prefix when they name one, else of data.valid_prefix / data.test_prefix."""
        key = f"{split}_prefix"
        prefix = next((getattr(corpus, key) for corpus in self.train_corpora
                       if getattr(corpus, key) and corpus.direction(self) == direction), getattr(self, key))
        return Path(self.root) / f"{prefix}.{direction[0]}", Path(self.root) / f"{prefix}.{direction[1]}"

    def cache_path(self, run_dir) -> Path:
        """The directory of the run's encoded corpora: ``cache_dir``, or ``<run_dir>/cache``."""
        return Path(self.cache_dir) if self.cache_dir else Path(run_dir) / "cache"


def language_token(language: str) -> str:
    """The token a multilingual model's sources start with to ask for ``language``: ``>>fr<<`` (OPUS-MT's)."""
    return f">>{language}<<"


@dataclass
class TokenizerConfig:
    joint: bool = True  # one SentencePiece model for source and target (needed for shared embeddings)
    model_type: str = "bpe"  # bpe | unigram | char | word
    vocab_size: int = 8000  # pieces per model, including pad/unk/bos/eos (ids 0/1/2/3)
    character_coverage: float = 0.9995  # share of characters covered; 0.9995 suits Chinese/Japanese, 1.0 Latin scripts
    input_sentence_size: int = 2_000_000  # sentences sampled to train the tokenizer
    # Where ids come from: "sentencepiece", the models' own ids; "shared" / "separate", an id list per
    # side (spm.src.ids.json, spm.tgt.ids.json) mapping pieces to the model's ids, one list for both
    # languages or one each (imported models: their vocab.json ids are not the SentencePiece ids).
    vocabulary: str = "sentencepiece"
    # Existing SentencePiece model(s) to use instead of training one: copied into the run directory
    # and recorded by SHA-256 like a trained one (model_type ... input_sentence_size are then unused).
    model: str = ""  # one model for both languages (joint: true)
    source_model: str = ""  # or one per language (joint: false): both
    target_model: str = ""  # the target language's model, with source_model

    def given_models(self) -> dict[str, str]:
        """The config keys of the existing models named, and their paths (empty: train one)."""
        keys = {"tokenizer.model": self.model, "tokenizer.source_model": self.source_model,
                "tokenizer.target_model": self.target_model}
        return {key: path for key, path in keys.items() if path}


@dataclass
class ModelConfig:
    d_model: int = 256  # width of embeddings and hidden states
    num_heads: int = 4  # attention heads; d_model must be divisible by it
    num_encoder_layers: int = 3  # encoder layers
    num_decoder_layers: int = 3  # decoder layers
    ffn_dim: int = 1024  # inner width of the position-wise feed-forward network
    dropout: float = 0.1  # dropout on embeddings and on each sublayer's output (before the residual add)
    # Dropout on attention weights or FFN activations costs much CPU time (attention dropout
    # disables the fused attention kernel) and helps less than residual dropout: off by default.
    attention_dropout: float = 0.0
    activation_dropout: float = 0.0  # dropout after the FFN activation
    activation: str = "relu"  # relu | gelu | silu (swish, as in Marian)
    pre_norm: bool = False  # False: post-norm as in Vaswani et al.; True: pre-norm (more stable when deep)
    share_embeddings: bool = True  # one embedding matrix for source and target (needs tokenizer.joint)
    tie_output: bool = True  # output projection shares the target embedding matrix
    max_positions: int = 1024  # initial size of the positional table (longer inputs still work: it grows)
    # What models trained elsewhere need (imported OPUS-MT/Marian models set them); the defaults are the paper's.
    position_table: str = "interleaved"  # interleaved: sin/cos in even/odd dimensions; concatenated: [sin | cos]
    scale_embeddings: bool = True  # token embeddings times sqrt(d_model) before the positions are added
    output_bias: bool = False  # a bias on the output logits (Marian's final_logits_bias)
    source_eos: bool = False  # end every source sentence with </s> (Marian's input format)


@dataclass
class TrainingConfig:
    seed: int = 1  # seeds Python, NumPy and torch; same seed + same data = same run on CPU
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "fp32"  # auto | fp32 | bf16 | fp16 (fp16 only on CUDA); auto: see device.resolve_precision
    num_threads: int = 0  # CPU threads for torch; 0 = torch's default
    compile: bool = False  # torch.compile the model
    batch_tokens: int = 4096  # target tokens per batch (before accumulation)
    accumulate: int = 1  # batches per optimizer update
    max_steps: int = 0  # optimizer updates; 0 = no limit
    max_epochs: int = 0  # 0 = no limit
    max_minutes: float = 0.0  # wall-clock budget for training; 0 = no limit
    optimizer: str = "adam"  # adam | adamw
    lr: float = 5e-4  # peak learning rate
    betas: list = field(default_factory=lambda: [0.9, 0.98])  # Adam betas, as in the paper
    eps: float = 1e-9  # Adam epsilon
    weight_decay: float = 0.0  # the optimizer's weight decay (torch Adam / AdamW weight_decay); 0 = off
    scheduler: str = "inverse_sqrt"  # inverse_sqrt | noam | cosine | linear | constant
    schedule_horizon: str = "steps"  # steps | minutes: what the cosine/linear decay runs over (max_steps or max_minutes)
    warmup_steps: int = 1000  # updates of linear warmup
    min_lr: float = 0.0  # floor of the cosine/linear schedules
    label_smoothing: float = 0.1  # epsilon of label-smoothed cross-entropy
    clip_norm: float = 0.0  # 0 = no clipping
    validate_every: int = 1000  # optimizer updates between validations
    log_every: int = 100  # updates between training log lines (loss, lr, tokens/s) in metrics.jsonl
    keep_last_n: int = 5  # step checkpoints kept (for averaging); older ones are deleted
    average_last_n: int = 0  # at the end, average this many last step checkpoints into average.pt
    patience: int = 0  # early stopping: validations without BLEU improvement; 0 = off
    max_nonfinite_in_row: int = 10  # stop after this many consecutive non-finite losses/gradients
    tensorboard: bool = True  # also write TensorBoard event files (RUN_DIR/tensorboard) when tensorboard is installed
    # Start from a trained model instead of random weights (see training/init_from.py): a run directory,
    # a checkpoint file or a CTranslate2 export of a run; "" = random weights.
    init_from: str = ""
    init_reset_optimizer: bool = True  # False: also continue the parent's optimizer state (Adam's moments)
    # Exponential moving average of the weights (training/ema.py), used for validation and saved as every
    # checkpoint's weights; 0 = off. Typical: 0.999 (short runs) to 0.9999.
    ema_decay: float = 0.0


@dataclass
class DecodingConfig:
    beam_size: int = 5  # beam width for translate/evaluate (1 = greedy search)
    length_penalty: float = 1.0  # GNMT alpha: scores divided by ((5 + length) / 6) ** alpha
    max_length_a: float = 1.5  # output length limit = a * source_length + b
    max_length_b: int = 10  # the b of that limit
    batch_size: int = 64  # sentences decoded together
    nbest: int = 1  # hypotheses returned per sentence (<= beam_size)
    early_exit: bool = False  # True: a sentence's beam search ends when its best candidate ends (faster)
    valid_beam_size: int = 1  # beam used for validation BLEU during training (1 = greedy, fastest)
    sacrebleu_tokenize: str = "auto"  # auto picks zh/ja-mecab for Chinese/Japanese targets, else 13a
    split_sentences: bool = True  # translate/evaluate/translate_text cut each line into sentences (text/segment.py)
    no_repeat_ngram_size: int = 0  # > 0: no n-gram of this many tokens appears twice in a translation (0 = off)
    repetition_penalty: float = 1.0  # a repeated token's log-probability times this (1 = off; > 1 discourages)


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    decoding: DecodingConfig = field(default_factory=DecodingConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# Allowed values of string options; checked at load time.
CHOICES = {
    "tokenizer.model_type": ("bpe", "unigram", "char", "word"),
    "tokenizer.vocabulary": ("sentencepiece", "shared", "separate"),
    "model.activation": ("relu", "gelu", "silu"),
    "model.position_table": ("interleaved", "concatenated"),
    "training.precision": ("auto", "fp32", "bf16", "fp16"),
    "training.optimizer": ("adam", "adamw"),
    "training.scheduler": ("inverse_sqrt", "noam", "cosine", "linear", "constant"),
    "training.schedule_horizon": ("steps", "minutes"),
}

# (key, lower bound, inclusive?) for numeric options.
MINIMUMS = {
    "data.max_len": (1, True),
    "data.unpunctuated_copies": (0.0, True),
    "data.num_workers": (0, True),
    "data.subword_alpha": (0.0, True),
    "data.subword_nbest": (-1, True),
    "data.sampling_temperature": (0.0, True),
    "tokenizer.vocab_size": (8, True),
    "tokenizer.character_coverage": (0.0, False),
    "model.d_model": (1, True),
    "model.num_heads": (1, True),
    "model.num_encoder_layers": (1, True),
    "model.num_decoder_layers": (1, True),
    "model.ffn_dim": (1, True),
    "model.dropout": (0.0, True),
    "model.attention_dropout": (0.0, True),
    "model.activation_dropout": (0.0, True),
    "model.max_positions": (1, True),
    "training.seed": (0, True),
    "tokenizer.input_sentence_size": (0, True),
    "training.num_threads": (0, True),
    "training.batch_tokens": (1, True),
    "training.accumulate": (1, True),
    "training.max_steps": (0, True),
    "training.max_epochs": (0, True),
    "training.max_minutes": (0.0, True),
    "training.lr": (0.0, False),
    "training.eps": (0.0, False),
    "training.weight_decay": (0.0, True),
    "training.warmup_steps": (0, True),
    "training.min_lr": (0.0, True),
    "training.label_smoothing": (0.0, True),
    "training.clip_norm": (0.0, True),
    "training.validate_every": (1, True),
    "training.log_every": (1, True),
    "training.keep_last_n": (1, True),
    "training.average_last_n": (0, True),
    "training.patience": (0, True),
    "training.max_nonfinite_in_row": (1, True),
    "training.ema_decay": (0.0, True),
    "decoding.beam_size": (1, True),
    "decoding.max_length_a": (0.0, True),
    "decoding.max_length_b": (0, True),
    "decoding.batch_size": (1, True),
    "decoding.nbest": (1, True),
    "decoding.valid_beam_size": (1, True),
    "decoding.no_repeat_ngram_size": (0, True),
    "decoding.repetition_penalty": (1e-30, True),  # decoding/logits.py SCALE_MIN
    "decoding.length_penalty": (-10.0, True),  # decoding/translator.py MAX_LENGTH_PENALTY
}
MAXIMUMS = {
    "data.unpunctuated_copies": 1.0,
    "data.subword_alpha": 1.0,
    "tokenizer.character_coverage": 1.0,
    "model.dropout": 0.99,
    "model.attention_dropout": 0.99,
    "model.activation_dropout": 0.99,
    "training.label_smoothing": 0.99,
    "training.seed": 2**32 - 1,  # numpy's seeds end there
    "decoding.beam_size": 256,   # as translate's --beam-size (decoding/translator.py MAX_BEAM_SIZE)
    # Deeper than any trained Transformer (DeepNet's 1,000 layers were 500 + 500): beyond, a typo or a crafted
    # config.json, whose layers' Python objects alone (~64 KiB each) take minutes and gigabytes to build.
    "model.num_encoder_layers": 1000,
    "model.num_decoder_layers": 1000,
    "decoding.repetition_penalty": 1e30,  # as --repetition-penalty (decoding/logits.py SCALE_MAX)
    # As translate() checks them (decoding/translator.py MAX_LENGTH_A, MAX_LENGTH_B, MAX_LENGTH_PENALTY): refused
    # where the config is read (a checkpoint's stored config included), naming the key, not when decoding.
    "decoding.max_length_a": 100.0,
    "decoding.max_length_b": 100_000,
    "decoding.length_penalty": 10.0,
    # One batch of more tokens than this needs tens of GB before its first update (one of 10**15 took 20 GB and
    # could not be stopped); a big GPU's batches are ~25,000 tokens, accumulated with training.accumulate.
    "training.batch_tokens": 10_000_000,
    "training.num_threads": 1024,  # 100,000 could not start its threads (and crashed torch)
}

_ENV_PATTERN = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_env(value: str) -> str:
    """Replace ${VAR} and ${VAR:-default} with environment values."""

    def replace(match: re.Match) -> str:
        name, default = match.group(1), match.group(2)
        if name in os.environ:
            return os.environ[name]
        if default is not None:
            return default
        raise TransformerMTError(
            f"environment variable {name} is used in the config but not set; "
            f"set it or write ${{{name}:-default}}"
        )

    return _ENV_PATTERN.sub(replace, value)


def expand_env_in(raw):
    """``raw`` (a YAML document) with ${VAR} expanded in every string.

    Only a config file the user passes (load_config) reads the environment: the config stored in a
    checkpoint or an export is data from whoever made the model, and expanding it would hand them the
    values of the user's variables (shown back by the server's /languages and /v1/info).
    """
    if isinstance(raw, str):
        return expand_env(raw)
    if isinstance(raw, dict):
        return {key: expand_env_in(value) for key, value in raw.items()}
    if isinstance(raw, list):
        return [expand_env_in(value) for value in raw]
    return raw


_SHORT_REPR = reprlib.Repr()
_SHORT_REPR.maxstring, _SHORT_REPR.maxother, _SHORT_REPR.maxlevel = 80, 80, 3


def _shown(value) -> str:
    """``value`` for an error message: a few elements and characters, however large the YAML made it."""
    try:
        return _SHORT_REPR.repr(value)
    except ValueError:  # an integer longer than Python converts to text
        return "an integer of thousands of digits"


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _finite_float(value) -> float | None:
    """``value`` as a float, or None for .nan, .inf and integers too large for a float."""
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


# Numbers typed by people (command-line options, form fields): the digits 0-9 only, as YAML and JSON read them.
# int() and float() also read other scripts' digits ("١٢", "１２"), so that "--beam-size ١٢" would pass where
# "--set decoding.beam_size=١٢" and a config file refuse it: one rule for every way a number comes in.
_WHOLE_NUMBER = re.compile(r"[+-]?[0-9]+")
_NUMBER = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?|[+-]?(inf|infinity|nan)", re.IGNORECASE)


def parse_whole_number(text: str) -> int | None:
    """``text`` (surrounding spaces allowed) as an int, or None where it is not an optional sign and digits 0-9
    ("²", "--5", "1.5", "١٢", "" are not)."""
    text = text.strip()
    return int(text) if len(text) < 4300 and _WHOLE_NUMBER.fullmatch(text) else None


def parse_number(text: str) -> float | None:
    """``text`` as a float ("0.5", "1e-3", "inf", "nan": ranges are checked where the value is used), or None
    where it is not written with the digits 0-9."""
    text = text.strip()
    return float(text) if _NUMBER.fullmatch(text) else None


def _with_dot(text: str) -> str:
    """'1e-3' as YAML reads it as a number: '1.0e-3' (a dot, and a sign in the exponent: '1.0e+5')."""
    mantissa, _, exponent = text.strip().lower().partition("e")
    sign = "" if exponent[:1] in ("+", "-") else "+"
    return f"{mantissa if '.' in mantissa else mantissa + '.0'}e{sign}{exponent}"


def _check_value(key: str, value, expected_type, source: str):
    """Return the value converted to the expected type, or raise a clear error."""
    where = f"{source}: key '{key}'"
    origin = typing.get_origin(expected_type) or expected_type
    if expected_type is bool or origin is bool:
        if isinstance(value, bool):
            return value
        raise TransformerMTError(f"{where} must be true or false, got {_shown(value)}")
    if expected_type is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise TransformerMTError(f"{where} must be an integer, got {_shown(value)}")
    if expected_type is float:
        if not _is_number(value):
            hint = ""
            if isinstance(value, str) and parse_number(value) is not None and "e" in value.lower() \
                    and not value.strip().lower().lstrip("+-").startswith(("inf", "nan")):  # YAML 1.1: 1e-3 is text
                hint = f" (YAML reads it as text; write {_with_dot(value)}: a dot, and a sign after the e)"
            raise TransformerMTError(f"{where} must be a number, got {_shown(value)}{hint}")
        # NaN passes every range check below (all comparisons are false), and inf makes no sense anywhere.
        number = _finite_float(value)
        if number is None:
            raise TransformerMTError(f"{where} must be a finite number, got {_shown(value)}")
        return number
    if expected_type is str:
        if isinstance(value, str):
            if "\x00" in value:  # no path, language code or name holds one (the OS refuses it in a path)
                raise TransformerMTError(f"{where} holds a NUL character (\\0); remove it")
            return value  # ${VAR} was expanded by load_config, for config files only (see expand_env_in)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise TransformerMTError(f"{where} must be a string, got {_shown(value)}")
    if origin is list and typing.get_args(expected_type) and dataclasses.is_dataclass(typing.get_args(expected_type)[0]):
        item_cls = typing.get_args(expected_type)[0]
        if not isinstance(value, list):
            raise TransformerMTError(f"{where} must be a list of mappings (one '- key: value' block each), got "
                                     f"{_shown(value)}")
        return [_build_section(item_cls, item, f"{key}[{i}]", source) for i, item in enumerate(value)]
    if origin is list:
        if not (isinstance(value, list) and all(_is_number(v) for v in value)):
            raise TransformerMTError(f"{where} must be a list of numbers, got {_shown(value)}")
        numbers = [_finite_float(v) for v in value]
        if None in numbers:
            raise TransformerMTError(f"{where} must be a list of finite numbers, got {_shown(value)}")
        return numbers
    raise AssertionError(f"unhandled config type {expected_type} for {key}")


def _build_section(section_cls, values, section_name: str, source: str):
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise TransformerMTError(
            f"{source}: {'section' if '.' not in section_name else 'key'} '{section_name}' must be a mapping of keys "
            f"to values, got {_shown(values)}; write its keys indented below '{section_name}:'"
        )
    hints = typing.get_type_hints(section_cls)
    valid = [f.name for f in dataclasses.fields(section_cls)]
    kwargs = {}
    for key, value in values.items():
        full_key = f"{section_name}.{key}"
        if key not in valid:
            close = difflib.get_close_matches(str(key), valid, n=1)
            hint = f"; did you mean '{section_name}.{close[0]}'?" if close else f"; valid keys: {', '.join(valid)}"
            raise TransformerMTError(f"{source}: unknown key '{full_key}'{hint}")
        kwargs[key] = _check_value(full_key, value, hints[key], source)
    return section_cls(**kwargs)


def config_from_dict(raw, source: str = "config") -> Config:
    """Build and validate a Config from a plain dict (as read from YAML or a checkpoint)."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise TransformerMTError(
            f"{source}: the top level must be a mapping with sections "
            f"data/tokenizer/model/training/decoding, got {type(raw).__name__}"
        )
    sections = {f.name: f for f in dataclasses.fields(Config)}
    kwargs = {}
    for name, values in raw.items():
        if name not in sections:
            close = difflib.get_close_matches(str(name), list(sections), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f"; valid sections: {', '.join(sections)}"
            raise TransformerMTError(f"{source}: unknown section '{name}'{hint}")
        section_cls = typing.get_type_hints(Config)[name]
        kwargs[name] = _build_section(section_cls, values, name, source)
    config = Config(**kwargs)
    validate(config, source)
    return config


def validate(config: Config, source: str = "config") -> None:
    """Check choices, ranges and cross-key constraints."""
    for key, choices in CHOICES.items():
        section, name = key.split(".")
        value = getattr(getattr(config, section), name)
        if value not in choices:
            raise TransformerMTError(f"{source}: key '{key}' must be one of {', '.join(choices)}, got {_shown(value)}")
    for key, (low, inclusive) in MINIMUMS.items():
        section, name = key.split(".")
        value = getattr(getattr(config, section), name)
        if value < low or (not inclusive and value == low):
            op = ">=" if inclusive else ">"
            raise TransformerMTError(f"{source}: key '{key}' must be {op} {low}, got {_shown(value)}")
    for key, high in MAXIMUMS.items():
        section, name = key.split(".")
        value = getattr(getattr(config, section), name)
        if value > high:
            raise TransformerMTError(f"{source}: key '{key}' must be <= {high}, got {_shown(value)}")
    model = config.model
    if model.d_model % model.num_heads != 0:
        raise TransformerMTError(
            f"{source}: key 'model.d_model' ({model.d_model}) must be divisible by "
            f"'model.num_heads' ({model.num_heads})"
        )
    if model.share_embeddings and not (config.tokenizer.joint or config.tokenizer.vocabulary == "shared"):
        raise TransformerMTError(
            f"{source}: 'model.share_embeddings: true' needs 'tokenizer.joint: true' "
            f"(one vocabulary for both languages); set one of them differently"
        )
    if config.tokenizer.vocabulary != "sentencepiece" and config.tokenizer.joint:
        raise TransformerMTError(
            f"{source}: 'tokenizer.vocabulary: {config.tokenizer.vocabulary}' maps the pieces of two SentencePiece "
            f"models to ids and needs 'tokenizer.joint: false'")
    _validate_given_tokenizers(config.tokenizer, source)
    if len(config.training.betas) != 2 or not all(0 <= b < 1 for b in config.training.betas):
        raise TransformerMTError(f"{source}: key 'training.betas' must be two numbers in [0, 1), got {config.training.betas}")
    if config.decoding.nbest > config.decoding.beam_size:
        raise TransformerMTError(
            f"{source}: key 'decoding.nbest' ({config.decoding.nbest}) must be <= 'decoding.beam_size' "
            f"({config.decoding.beam_size})"
        )
    if config.data.src_lang == config.data.tgt_lang:
        raise TransformerMTError(f"{source}: 'data.src_lang' and 'data.tgt_lang' are both {config.data.src_lang!r}")
    _validate_schedule(config.training, source)
    _validate_corpora(config, source)
    _validate_subword_sampling(config, source)
    if config.training.ema_decay >= 1.0:
        raise TransformerMTError(
            f"{source}: key 'training.ema_decay' must be < 1 (the share of the old average kept at each update; "
            f"0 = off, e.g. 0.9999), got {config.training.ema_decay}")


MAX_TAG_LENGTH = 64
# Pieces every model has already (ids 0-3): a tag must be a piece of its own.
SPECIAL_PIECES = ("<pad>", "<unk>", "<s>", "</s>")


def _validate_corpora(config: Config, source: str) -> None:
    for i, corpus in enumerate(config.data.train_corpora):
        key = f"data.train_corpora[{i}]"
        if bool(corpus.prefix) == bool(corpus.src or corpus.tgt):
            raise TransformerMTError(
                f"{source}: '{key}' needs either 'prefix' (files <data.root>/<prefix>.<lang>) or both 'src' and "
                f"'tgt' (file paths); give one of the two")
        if not corpus.prefix and not (corpus.src and corpus.tgt):
            raise TransformerMTError(f"{source}: '{key}' names '{'src' if corpus.src else 'tgt'}' but not "
                                     f"'{'tgt' if corpus.src else 'src'}'; give both files")
        if not corpus.weight > 0:
            raise TransformerMTError(f"{source}: key '{key}.weight' must be > 0 (its share of each epoch), got "
                                     f"{corpus.weight}; leave the corpus out to not use it")
        if len(corpus.tag) > MAX_TAG_LENGTH:
            raise TransformerMTError(f"{source}: key '{key}.tag' is {len(corpus.tag)} characters long; a tag is one "
                                     f"short token (at most {MAX_TAG_LENGTH} characters), e.g. <BT>")
        if corpus.tag and (corpus.tag != corpus.tag.strip() or any(c.isspace() for c in corpus.tag)
                           or corpus.tag in SPECIAL_PIECES):
            raise TransformerMTError(
                f"{source}: key '{key}.tag' {corpus.tag!r} must be one token without spaces that is not one of "
                f"{', '.join(SPECIAL_PIECES)}, e.g. <BT>")
    if config.tokenizer.vocabulary != "sentencepiece" and config.data.tags():
        raise TransformerMTError(
            f"{source}: 'data.train_corpora' tags need a SentencePiece vocabulary of this toolkit; an imported "
            f"model ('tokenizer.vocabulary: {config.tokenizer.vocabulary}') has no room for new tokens: remove "
            f"the tags")
    _validate_directions(config, source)


# What a language code of a direction may be: it becomes a token (>>fr<<) and a name in the server's API.
LANGUAGE_CODE_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,19}")


def _validate_directions(config: Config, source: str) -> None:
    """The directions of a multilingual run (data.train_corpora's src_lang / tgt_lang): codes that make
    tokens, one pair of validation and test files each."""
    data = config.data
    for i, corpus in enumerate(data.train_corpora):
        key = f"data.train_corpora[{i}]"
        src_lang, tgt_lang = corpus.direction(data)
        for name, code in (("src_lang", corpus.src_lang), ("tgt_lang", corpus.tgt_lang)):
            if code and not LANGUAGE_CODE_PATTERN.fullmatch(code):
                raise TransformerMTError(
                    f"{source}: key '{key}.{name}' {_shown(code)} is not a language code (letters, digits, - and _, "
                    f"at most 20 characters, e.g. fr or pt-BR)")
        if src_lang == tgt_lang:
            raise TransformerMTError(f"{source}: '{key}' translates {src_lang!r} into itself; set its 'src_lang' "
                                     f"and 'tgt_lang' (or data.src_lang / data.tgt_lang) to two languages")
        if corpus.tag and re.fullmatch(r">>.*<<", corpus.tag):
            raise TransformerMTError(f"{source}: key '{key}.tag' {corpus.tag!r} has the form of a target-language "
                                     f"token (>>xx<<); choose another tag, e.g. <BT>")
        for split in ("valid", "test"):
            prefix = getattr(corpus, f"{split}_prefix")
            others = {getattr(other, f"{split}_prefix") for other in data.train_corpora
                      if other.direction(data) == (src_lang, tgt_lang) and getattr(other, f"{split}_prefix")}
            if prefix and len(others) > 1:
                raise TransformerMTError(
                    f"{source}: the corpora of {src_lang} -> {tgt_lang} name different '{split}_prefix' values "
                    f"({', '.join(sorted(others))}); a direction has one {split} set: give it on one corpus")
    if data.multilingual():
        if config.tokenizer.vocabulary != "sentencepiece":
            raise TransformerMTError(
                f"{source}: 'data.train_corpora' of several directions ({len(data.directions())}) need the "
                f"target-language tokens (>>xx<<) of a SentencePiece vocabulary of this toolkit; an imported model "
                f"('tokenizer.vocabulary: {config.tokenizer.vocabulary}') has no room for new tokens: train one "
                f"direction, or a new model")
    else:  # one direction: data.src_lang -> data.tgt_lang and data's own validation and test files, everywhere
        for i, corpus in enumerate(data.train_corpora):
            key = f"data.train_corpora[{i}]"
            if corpus.direction(data) != (data.src_lang, data.tgt_lang):
                raise TransformerMTError(
                    f"{source}: '{key}' translates {' -> '.join(corpus.direction(data))}, but the run's one direction "
                    f"is data.src_lang -> data.tgt_lang ({data.src_lang} -> {data.tgt_lang}); set those instead "
                    f"(a corpus's src_lang / tgt_lang are for runs of several directions)")
            for split in ("valid", "test"):
                if getattr(corpus, f"{split}_prefix"):
                    raise TransformerMTError(
                        f"{source}: key '{key}.{split}_prefix' names the {split} set of a direction of a multilingual "
                        f"run; a run of one direction uses 'data.{split}_prefix': set that instead")
    if data.sampling_temperature and not data.train_corpora:
        raise TransformerMTError(f"{source}: 'data.sampling_temperature' shares an epoch among 'data.train_corpora', "
                                 f"which is empty; list the corpora, or set it to 0")


def _validate_subword_sampling(config: Config, source: str) -> None:
    data, tokenizer = config.data, config.tokenizer
    if not data.subword_alpha:
        return
    if tokenizer.vocabulary != "sentencepiece":
        raise TransformerMTError(
            f"{source}: 'data.subword_alpha' samples SentencePiece segmentations, which an imported model's "
            f"vocabulary ('tokenizer.vocabulary: {tokenizer.vocabulary}') does not map; set it to 0")
    if not tokenizer.given_models() and tokenizer.model_type in ("word", "char"):
        raise TransformerMTError(
            f"{source}: 'data.subword_alpha' needs a bpe or unigram tokenizer ('tokenizer.model_type' is "
            f"{tokenizer.model_type}, which has one segmentation per word); set model_type or subword_alpha: 0")
    if data.subword_nbest == 0:
        raise TransformerMTError(f"{source}: key 'data.subword_nbest' must be -1 (all segmentations) or >= 1, got 0")


def _validate_given_tokenizers(cfg: TokenizerConfig, source: str) -> None:
    """Which existing SentencePiece models may be named together (the files are checked by
    check_given_models when the config is read, with SentencePiece)."""
    if cfg.model and not cfg.joint:
        raise TransformerMTError(
            f"{source}: 'tokenizer.model' is one SentencePiece model for both languages and needs "
            f"'tokenizer.joint: true'; for one model per language set 'tokenizer.source_model' and "
            f"'tokenizer.target_model' instead")
    if (cfg.source_model or cfg.target_model) and cfg.joint:
        raise TransformerMTError(
            f"{source}: 'tokenizer.source_model' / 'tokenizer.target_model' are one SentencePiece model per "
            f"language and need 'tokenizer.joint: false'; for one model for both set 'tokenizer.model' instead")
    if bool(cfg.source_model) != bool(cfg.target_model):
        given, missing = (("source_model", "target_model") if cfg.source_model else ("target_model", "source_model"))
        raise TransformerMTError(
            f"{source}: 'tokenizer.{given}' is set but 'tokenizer.{missing}' is not; give both (or neither, to "
            f"train them)")


def _validate_schedule(cfg: TrainingConfig, source: str) -> None:
    """A decaying schedule needs the end it decays towards."""
    if cfg.schedule_horizon == "minutes":
        if cfg.scheduler not in DECAYING_SCHEDULERS:
            raise TransformerMTError(
                f"{source}: 'training.schedule_horizon: minutes' times the decay of a cosine or linear schedule, "
                f"but 'training.scheduler' is {cfg.scheduler}; set scheduler to cosine or linear, or the horizon "
                f"to steps")
        if not cfg.max_minutes:
            raise TransformerMTError(
                f"{source}: 'training.schedule_horizon: minutes' decays the learning rate over "
                f"'training.max_minutes', which is 0; set max_minutes (e.g. 60)")
    elif cfg.scheduler in DECAYING_SCHEDULERS and not cfg.max_steps:
        raise TransformerMTError(
            f"{source}: 'training.scheduler: {cfg.scheduler}' decays over 'training.max_steps', which is 0; set "
            f"max_steps, or 'training.schedule_horizon: minutes' with max_minutes")


# Schedules that ramp the learning rate up over training.warmup_steps before their peak.
WARMUP_SCHEDULERS = ("inverse_sqrt", "noam", "cosine", "linear", "constant")
# Schedules that decay to training.min_lr over a horizon (training.schedule_horizon).
DECAYING_SCHEDULERS = ("cosine", "linear")


def training_warnings(config: Config) -> list[str]:
    """Settings that are valid but almost certainly not what the user meant, one message each."""
    cfg = config.training
    warnings = []
    if cfg.scheduler in WARMUP_SCHEDULERS and 0 < cfg.max_steps < cfg.warmup_steps:
        warnings.append(
            f"training.warmup_steps ({cfg.warmup_steps}) > training.max_steps ({cfg.max_steps}): the learning rate "
            f"never reaches its peak training.lr; lower warmup_steps"
        )
    return warnings


class _UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that rejects a key given twice in one mapping.

    yaml.safe_load keeps the last of them silently, so a second ``training:``
    section would quietly replace the first one. Keys merged in with ``<<`` may
    still be overridden: that is what merging is for.
    """

    def __init__(self, stream):
        super().__init__(stream)
        self.key_prefixes = {}  # mapping node -> dotted path of its key, e.g. "training.", to name nested keys

    def construct_mapping(self, node, deep=False):
        prefix = self.key_prefixes.get(node, "")
        first_line = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, Hashable):
                continue  # the base class reports unhashable keys
            line = key_node.start_mark.line + 1
            if key in first_line:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key '{prefix}{key}' is given twice (lines {first_line[key]} and {line}); keep one",
                    key_node.start_mark)
            first_line[key] = line
            # Children are constructed after their parent (PyYAML defers them), so the prefix is known in time.
            self.key_prefixes.setdefault(value_node, f"{prefix}{key}.")
        return super().construct_mapping(node, deep)


    # YAML 1.1 (PyYAML's) reads 010 as 8 (octal), 1:30 as 90 (base 60), 0b11, 0x10 and 1_000 as numbers too: a
    # "validate_every: 0500" would silently be 320. A config's numbers are written in plain digits only.
    PLAIN_INT = re.compile(r"[-+]?(0|[1-9][0-9]*)")
    PLAIN_FLOAT = re.compile(r"[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?|[-+]?\.(inf|Inf|INF)|\.(nan|NaN|NAN)")

    def construct_plain_int(self, node):
        if not self.PLAIN_INT.fullmatch(node.value):
            raise self._not_plain(node, "a whole number")
        return int(node.value)

    def construct_plain_float(self, node):
        if not self.PLAIN_FLOAT.fullmatch(node.value):
            raise self._not_plain(node, "a number")
        return super().construct_yaml_float(node)

    @staticmethod
    def _not_plain(node, what: str) -> yaml.constructor.ConstructorError:
        return yaml.constructor.ConstructorError(
            None, None, f"'{node.value}' is {what} in YAML 1.1's octal, base-60, binary, hexadecimal or "
                        f"underscore notation, which would not mean what it looks like: write it in plain digits "
                        f"(e.g. 500, 0.001, 1e-4), or quote it if it is text", node.start_mark)


_UniqueKeyLoader.add_constructor("tag:yaml.org,2002:int", _UniqueKeyLoader.construct_plain_int)
_UniqueKeyLoader.add_constructor("tag:yaml.org,2002:float", _UniqueKeyLoader.construct_plain_float)


# Nodes a config may hold once its aliases (*name) are expanded: real configs have about a hundred; an
# "alias bomb" of a few lines expands to billions and would take minutes and gigabytes to walk.
MAX_YAML_NODES = 10_000


def _expanded_size(node, sizes: dict, open_nodes: set) -> int:
    """How many nodes ``node`` stands for once every alias is written out (shared nodes counted each time)."""
    if id(node) in sizes:
        return sizes[id(node)]
    if id(node) in open_nodes:
        raise yaml.composer.ComposerError(None, None, "an alias refers to a node that contains it", node.start_mark)
    open_nodes.add(id(node))
    size = 1
    if isinstance(node, yaml.SequenceNode):
        children = node.value
    elif isinstance(node, yaml.MappingNode):
        children = [child for pair in node.value for child in pair]
    else:
        children = []
    for child in children:
        size += _expanded_size(child, sizes, open_nodes)
        if size > MAX_YAML_NODES:
            break
    open_nodes.discard(id(node))
    sizes[id(node)] = size
    return size


def _load_yaml(text: str):
    loader = _UniqueKeyLoader(text)  # a SafeLoader: builds no Python objects
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_size(node, {}, set()) > MAX_YAML_NODES:
            raise yaml.composer.ComposerError(
                None, None, f"its aliases (*name) expand to more than {MAX_YAML_NODES} values, which no config "
                            f"needs; write the values out", node.start_mark)
        try:
            return loader.construct_document(node)
        except ValueError as exc:  # an integer of more digits than Python converts (sys.get_int_max_str_digits)
            raise yaml.constructor.ConstructorError(None, None, str(exc).split(";")[0], node.start_mark) from None
    finally:
        loader.dispose()


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """Where and what is wrong in a YAML error: " at line L, column C: problem"."""
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return f"{where}: {problem}"


def parse_overrides(items: list[str]) -> dict:
    """``["training.max_steps=100", ...]`` (the CLI's ``--set``) -> ``{"training.max_steps": 100}``, values as YAML."""
    overrides = {}
    for item in items:
        dotted, sep, value = item.partition("=")
        section, _, key = dotted.strip().partition(".")
        if not sep or not section or not key:
            raise TransformerMTError(f"--set {item!r}: expected SECTION.KEY=VALUE, e.g. training.max_steps=100")
        try:
            overrides[dotted.strip()] = _load_yaml(value)
        except yaml.YAMLError as exc:
            raise TransformerMTError(
                f"--set {item!r}: the value is not valid YAML{_yaml_problem(exc)}; "
                f"write a YAML value, e.g. training.max_steps=100 or training.betas=[0.9,0.98]"
            ) from None
    return overrides


def _apply_overrides(raw, overrides: dict):
    """``raw`` with the dotted ``overrides`` set; a non-mapping top level or section is left for
    config_from_dict to report (with the file name) instead of failing here."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        return raw
    raw = dict(raw)
    for dotted, value in overrides.items():
        section, _, key = dotted.partition(".")
        values = raw.get(section)
        if values is None:
            values = {}
        if isinstance(values, dict):
            raw[section] = {**values, key: value}
    return raw


MAX_CONFIG_BYTES = 4_000_000


def load_config(path, overrides: dict | None = None, environment: bool = True) -> Config:
    """Read a YAML config file; raise TransformerMTError with the file and line on any problem.

    ``environment``: expand ${VAR} and ${VAR:-default} in its strings (a config the user wrote); False for
    a config that came with a model (an export's config.yaml), which must never read the environment.
    """
    path = Path(path)
    problem = file_problem(path, "a YAML file")
    if problem is not None:  # a directory or a FIFO is named as what it is, not as missing
        fix = (f"pass the YAML file itself, e.g. --config {path / 'config.yaml'}" if (path / "config.yaml").is_file()
               else "pass a YAML file (not a directory) to --config" if path.is_dir()
               else "pass an existing YAML file to --config")
        raise TransformerMTError(f"config file {path} {problem}; {fix}")
    try:
        from .safe_files import read_user_file

        # By descriptor (never another user's link), and bounded: a config is a few kB.
        text = read_user_file(path, "config file", limit=MAX_CONFIG_BYTES,
                              fix="a config is a few kB: is it the right file?").decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TransformerMTError(f"config file {path} is not valid UTF-8 (byte {exc.start}); save it as UTF-8") from None
    except OSError as exc:
        raise TransformerMTError(f"config file {path} cannot be read: {exc.strerror}") from None
    try:
        raw = _load_yaml(text)
    except yaml.YAMLError as exc:
        raise TransformerMTError(f"config file {path} is not valid YAML{_yaml_problem(exc)}") from None
    except RecursionError:  # brackets or mappings nested thousands deep: no config nests more than three
        raise TransformerMTError(f"config file {path} nests its values too deeply to be a config") from None
    if overrides:
        raw = _apply_overrides(raw, overrides)
    if environment:
        raw = expand_env_in(raw)
    config = config_from_dict(raw, source=str(path))
    check_given_models(config.tokenizer, source=str(path), tags=config.data.symbols())
    return config


def check_given_models(cfg: TokenizerConfig, source: str = "config", tags: list[str] = ()) -> None:
    """Check the existing SentencePiece models the tokenizer section names (when the config is read), and that
    the source model has a piece for each corpus tag and target-language token (``tags``: data.symbols())."""
    from .data.tokenizer_files import check_model_file, check_model_tags  # SentencePiece is imported only here

    for key, path in cfg.given_models().items():
        check_model_file(Path(path), key, source)
    source_model = cfg.model or cfg.source_model
    if source_model and tags:
        key = "tokenizer.model" if cfg.model else "tokenizer.source_model"
        check_model_tags(source_model, tags, f"{source}: '{key}' {source_model}",
                         f"train that model with --user_defined_symbols={','.join(tags)}, or leave '{key}' empty to "
                         f"train one here (the tags are then added to it)")


def check_data_files(config: Config, splits=("train", "valid")) -> None:
    """Raise a clear error if a data file named by the config is missing or not a file."""
    if config.data.multilingual():
        for split in [split for split in splits if split != "train"]:
            for direction in config.data.directions():
                for path in config.data.split_files(split, direction):
                    problem = file_problem(path)
                    if problem is not None:
                        raise TransformerMTError(
                            f"data file {path} ({split} set of {direction[0]} -> {direction[1]}) {problem} (absolute: "
                            f"{os.path.abspath(path)}); check 'data.root' and 'data.{split}_prefix' (or that "
                            f"direction's '{split}_prefix' in data.train_corpora) in the config")
        splits = [split for split in splits if split == "train"]
    if "train" in splits and config.data.train_corpora:
        for i, corpus in enumerate(config.data.train_corpora):
            for path in corpus.files(config.data):
                problem = file_problem(path)
                if problem is not None:
                    keys = "'data.root' and 'prefix'" if corpus.prefix else "'src' and 'tgt'"
                    raise TransformerMTError(
                        f"data file {path} (training corpus data.train_corpora[{i}]) {problem} (absolute: "
                        f"{os.path.abspath(path)}); check {keys} of that corpus in the config")
    for split in [split for split in splits if not (split == "train" and config.data.train_corpora)]:
        for lang in (config.data.src_lang, config.data.tgt_lang):
            path = config.data.path(split, lang)
            problem = file_problem(path)
            if problem is not None:
                # abspath, not resolve(): resolve raises on a symbolic link loop.
                raise TransformerMTError(
                    f"data file {path} (split '{split}', language '{lang}') {problem} "
                    f"(absolute: {os.path.abspath(path)}); check 'data.root', 'data.{split}_prefix' and "
                    f"'data.src_lang'/'data.tgt_lang' in the config"
                )
    cache_dir = config.data.cache_dir
    if "train" in splits and cache_dir and os.path.lexists(cache_dir) and not os.path.isdir(cache_dir):
        raise TransformerMTError(
            f"data.cache_dir {cache_dir} is not a directory; point 'data.cache_dir' at a directory "
            f"(it is created if missing) or leave it empty to cache in the run directory"
        )


def save_config(config: Config, path) -> None:
    """Write a run's (or an export's) config.yaml, never through a link planted under that name."""
    from .safe_files import write_run_file

    write_run_file(path, yaml.safe_dump(config.to_dict(), sort_keys=False))
