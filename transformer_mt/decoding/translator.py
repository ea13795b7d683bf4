"""The batched Python translation API.

    from transformer_mt import Translator
    translator = Translator.from_run("runs/demo")
    translator.translate(["first sentence", "second sentence"], beam_size=5)

Sentences are tokenized, sorted by length (so batches hold sentences of
similar length and little padding), decoded in batches, detokenized and
returned in input order. An empty input sentence gives an empty output.

``translate_text(texts)`` translates paragraphs, documents and HTML (decoding/paragraphs.py): each
line cut into sentences, all of them translated in one ``translate()`` call, each text put back together.

``translate(..., return_alignment=True)`` also gives each translation's hard
alignment to its source (see alignment.py), and ``attention(sentence)`` the
attention weights a translation was made with (for ``transformer-mt plot --attention``).

Decoding options beyond beam search (logits.py): sampling (``temperature``, ``top_k``, ``top_p``,
``seed``; ``nbest`` samples per sentence), ``no_repeat_ngram_size``, ``repetition_penalty`` and a target
``prefix`` per sentence. ``Translator.from_runs([A, B])`` decodes with an ensemble (ensemble.py).
``Translator.from_run(run, shortlist=True)`` decodes every batch over the run's lexical shortlist (shortlist.py).
"""

from __future__ import annotations

import logging
import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import torch

from ..checkpoint import check_tokenizer_checksums, load_checkpoint
from ..config import Config, config_from_dict
from ..data.tokenizer import EOS_ID, LANGUAGE_CODE, PAD_ID, UNK_ID, Tokenizer, id_lists, load_tokenizers
from ..device import autocast, resolve_device
from ..errors import TransformerMTError
from ..kernels import quantize_linear_layers
from ..model import Transformer, build_model
from ..text.glossary import Glossary
from .alignment import check_alignment_layer, check_alignment_unit, hard_alignment, word_alignment
from .ensemble import Ensemble, check_members
from .logits import is_number, is_whole, search_options
from .paragraphs import translate_document, translate_texts
from .search import beam_search, greedy_search, sample_search
from .shortlist import BatchVocabulary, Shortlist, shortlist_path

log = logging.getLogger(__name__)


class Translation(NamedTuple):
    """One translation and its score: the length-normalised log-probability beam search ranks by."""

    text: str
    score: float


class AlignedTranslation(NamedTuple):
    """A translation with its score and its hard alignment to the source: ``alignment`` holds pairs
    (i, j), source token i aligned to target token j (counted from 0), where the tokens are
    ``source_tokens`` and ``target_tokens``: SentencePiece pieces, or words (alignment_unit="words")."""

    text: str
    score: float
    alignment: list[tuple[int, int]]
    source_tokens: list[str]
    target_tokens: list[str]


class SentenceAttention(NamedTuple):
    """The attention weights one sentence's translation was made with (``Translator.attention``).

    ``target_pieces`` are the output pieces, then ``</s>`` when the translation ended with the end
    token: row t of the weights is the step that predicted ``target_pieces[t]``. The decoder's
    self-attention at that step looks at its inputs, ``<s>`` and ``target_pieces[:t]``.
    """

    text: str
    source_pieces: list[str]
    target_pieces: list[str]
    cross_attention: torch.Tensor  # (decoder layers, heads, target pieces, source pieces)
    self_attention: torch.Tensor | None  # (decoder layers, heads, target pieces, target pieces); when asked for
    search: str  # how it was translated, e.g. "beam search (beam size 5)"


class Decoding(NamedTuple):
    """The decoding settings of one translate() call."""

    beam_size: int
    nbest: int
    length_penalty: float
    batch_size: int
    max_length_a: float
    max_length_b: int
    early_exit: bool


# Beyond this the GNMT penalty ((5 + length) / 6) ** alpha overflows float arithmetic; useful values are 0-2.
MAX_LENGTH_PENALTY = 10.0
# Upper bounds that keep a typo (--beam-size 999999999) from asking for terabytes: each beam or sample is a
# row of the decoder's batch, and a forced prefix is decoded one token per step. Far above what helps quality.
MAX_BEAM_SIZE = 256
MAX_PREFIX_TOKENS = 1024
# Glossary terms or constraints a sentence keeps: each is a bank of the beam (constraints.py), so a beam much
# narrower than their tokens places them badly; a sentence with more is a list, not a sentence.
MAX_CONSTRAINTS = 32
# Translations longer than 100 times their source, or than 100,000 tokens, are a typo's, and would decode for hours.
MAX_LENGTH_A, MAX_LENGTH_B = 100.0, 100_000


def resolve_decoding(config: Config, beam_size: int | None = None, nbest: int | None = None,
                     length_penalty: float | None = None, batch_size: int | None = None,
                     max_length_a: float | None = None, max_length_b: int | None = None,
                     early_exit: bool | None = None) -> Decoding:
    """translate()'s decoding arguments, those left out (None) taken from the run's decoding config, checked."""
    dec = config.decoding
    settings = Decoding(
        beam_size=dec.beam_size if beam_size is None else beam_size,
        nbest=1 if nbest is None else nbest,
        length_penalty=dec.length_penalty if length_penalty is None else length_penalty,
        batch_size=dec.batch_size if batch_size is None else batch_size,
        max_length_a=dec.max_length_a if max_length_a is None else max_length_a,
        max_length_b=dec.max_length_b if max_length_b is None else max_length_b,
        early_exit=dec.early_exit if early_exit is None else early_exit)
    # Checked where they enter: "5", 2.5 or True as a count would fail later as a TypeError, deep in search.
    for name in ("beam_size", "nbest", "batch_size", "max_length_b"):
        value = getattr(settings, name)
        if not is_whole(value):
            raise TransformerMTError(f"{name} must be a whole number (an int), got {value!r:.40}")
    for name in ("length_penalty", "max_length_a"):
        value = getattr(settings, name)
        if not is_number(value):
            raise TransformerMTError(f"{name} must be a number, got {value!r:.40}")
    if not 0 <= settings.max_length_a <= MAX_LENGTH_A or not 0 <= settings.max_length_b <= MAX_LENGTH_B:
        raise TransformerMTError(f"the length limit max_length_a * source length + max_length_b needs max_length_a "
                                 f"from 0 to {MAX_LENGTH_A:g} and max_length_b from 0 to {MAX_LENGTH_B:,}, got "
                                 f"{settings.max_length_a:g} and {settings.max_length_b}")
    for name, option in (("beam_size", "--beam-size"), ("nbest", "--nbest"), ("batch_size", "--batch-size")):
        if getattr(settings, name) < 1:  # the command-line option beside the API's name: either may have set it
            raise TransformerMTError(f"{name} ({option}) must be at least 1, got {getattr(settings, name)}")
    if settings.beam_size > MAX_BEAM_SIZE:
        raise TransformerMTError(f"the beam size must be at most {MAX_BEAM_SIZE} (each beam is a row of the decoder's "
                                 f"batch; 4 to 10 is usual), got {settings.beam_size}")
    for name, option in (("length_penalty", "--length-penalty"), ("max_length_a", "decoding.max_length_a")):
        if not math.isfinite(getattr(settings, name)):
            raise TransformerMTError(f"{name} ({option}) must be a finite number, got {getattr(settings, name)}")
    if abs(settings.length_penalty) > MAX_LENGTH_PENALTY:
        raise TransformerMTError(f"the length penalty must be between -{MAX_LENGTH_PENALTY:g} and "
                                 f"{MAX_LENGTH_PENALTY:g} (useful values: 0 to 2), got {settings.length_penalty:g}")
    if settings.nbest > settings.beam_size:
        raise TransformerMTError(f"nbest ({settings.nbest}) cannot exceed the beam size ({settings.beam_size})")
    return settings


def target_tokens(tokenizer: Tokenizer, config: Config) -> list[str]:
    """The ``>>xx<<`` tokens a multilingual model's sources start with, one per target language: an imported
    model's from its vocabulary (OPUS-MT), a model trained here from the directions of its config (data.train_corpora
    of several directions); none for a model of one target language."""
    return tokenizer.language_codes() or config.data.language_tokens()


def language_token_for(codes: list[str], target_language: str | None, config: Config) -> str | None:
    """The ``>>xx<<`` token of ``codes`` that asks for ``target_language`` (None: the only one there is, or none
    for a model of one target language); an error naming the choices where it is missing or not one of them."""
    shown = ", ".join(c[2:-2] for c in codes[:50]) + (", ..." if len(codes) > 50 else "")
    if target_language is None:
        if len(codes) > 1:
            raise TransformerMTError(f"this model translates into {len(codes)} languages: give the target language "
                                     f"(--target-language, or target_language=), one of {shown}")
        return codes[0] if codes else None
    if not isinstance(target_language, str):
        raise TransformerMTError(f"the target language must be a language code (text), got {target_language!r:.40}")
    if not codes:
        if target_language.lower() == str(config.data.tgt_lang).lower():
            return None  # the one language this model translates into
        raise TransformerMTError(f"this model translates into one language ({config.data.tgt_lang}); leave out the "
                                 f"target language ({target_language!r})")
    code = target_language if target_language.startswith(">>") else f">>{target_language}<<"
    if code not in codes:
        raise TransformerMTError(f"target language {target_language!r} is not one of this model's "
                                 f"{len(codes)}: {shown}")
    return code


def cut_to_positions(encoded: list[list[int]], config: Config) -> list[list[int]]:
    """Sources cut to the model's positions (model.max_positions; a source's </s> kept at its end), with one
    warning: beyond them the model was never trained, and attention over a whole page given as one sentence
    (a 1 MB line is ~350,000 tokens) would take hours and gigabytes for a translation that is garbage."""
    limit = config.model.max_positions
    too_long = [len(ids) for ids in encoded if len(ids) > limit]
    if not too_long:
        return encoded
    log.warning("%d input sentence(s) longer than the model's %d positions (model.max_positions) were cut to "
                "that length (longest: %d tokens): only their beginning is translated; split them into sentences",
                len(too_long), limit, max(too_long))
    eos = [EOS_ID] if config.model.source_eos else []
    return [ids[:limit - len(eos)] + eos if len(ids) > limit else ids for ids in encoded]


def encode_sentences(sentences: list[str], tokenizer: Tokenizer, config: Config,
                     target_language: str | None = None) -> list[list[int]]:
    """translate()'s input sentences as source ids (stripped, no bos; eos only with model.source_eos).

    ``target_language``: a multilingual model's target language (its ``>>xx<<`` token starts each source).
    """
    if isinstance(sentences, str):
        raise TypeError("translate() takes a list of sentences; wrap a single sentence in a list")
    for k, sentence in enumerate(sentences):
        if not isinstance(sentence, str):
            raise TransformerMTError(f"sentence {k} is {type(sentence).__name__}, not text: translate() takes a list "
                                     f"of str (decode bytes first)")
        try:
            sentence.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise TransformerMTError(f"sentence {k} holds a lone surrogate (character {exc.start}), which is no "
                                     f"text; decode its bytes with errors='replace' first") from None
    codes = target_tokens(tokenizer, config)
    texts = [s.strip() for s in sentences]
    several = target_language is None and len(codes) > 1
    default = None if several else language_token_for(codes, target_language, config)
    tokens = []
    for k, text in enumerate(texts):
        # OPUS-MT's own convention also holds: a sentence may start with its target's token (">>fra<< Hello").
        code = LANGUAGE_CODE.match(text) if target_language is None and codes else None
        if code is not None and code.group() in codes:
            tokens.append(code.group())
            texts[k] = text[code.end():].strip()
        elif several and text:
            language_token_for(codes, None, config)  # raises the error naming the choices
        else:
            tokens.append(default)
    encoded = tokenizer.encode(texts)
    # The token is one id before the source's pieces, as training put it there (and as Marian does).
    token_ids = dict(zip(codes, tokenizer.piece_to_id(codes))) if codes else {}
    encoded = [[token_ids[token]] + ids if token is not None and sentence.strip() else ids
               for token, ids, sentence in zip(tokens, encoded, sentences)]
    if config.model.source_eos:  # an empty sentence stays empty: it is not translated
        encoded = [ids + [EOS_ID] if ids else ids for ids in encoded]
    # Training dropped pairs longer than data.max_len, so the model has never seen such inputs and
    # tends to stop early: say so once per call instead of silently returning a short translation.
    # Measured before the cut to the model's positions, so that "longest" is the input's own length.
    limit = config.data.max_len
    too_long = [len(ids) for ids in encoded if len(ids) > limit]
    if too_long:
        log.warning("%d input sentence(s) longer than the model's training limit data.max_len=%d tokens "
                    "(longest: %d); translations of such long inputs are often truncated or wrong; split "
                    "them into sentences", len(too_long), limit, max(too_long))
    return cut_to_positions(encoded, config)


# Whole batches decoded side by side on CPU (see run_batches); False decodes them one after another.
def sample_count(beam_size: int | None, nbest: int | None, return_alignment: bool) -> int:
    """The samples per sentence (``nbest``) of a translation that samples, or an error for the options sampling
    does not take (a beam, alignments) or a count it cannot draw."""
    if beam_size not in (None, 1):
        raise TransformerMTError(f"sampling (temperature, top_k, top_p) draws each token instead of searching "
                                 f"with a beam: leave out the beam size ({beam_size}) or the sampling options")
    if return_alignment:
        raise TransformerMTError("alignments come with beam or greedy search; leave out sampling "
                                 "(temperature, top_k, top_p) or the alignment")
    samples = 1 if nbest is None else nbest
    if not isinstance(samples, int) or isinstance(samples, bool) or samples < 1:
        raise TransformerMTError(f"nbest (the samples per sentence) must be at least 1, got {samples!r}")
    if samples > MAX_BEAM_SIZE:
        raise TransformerMTError(f"nbest (the samples per sentence) must be at most {MAX_BEAM_SIZE} (each "
                                 f"sample is a row of the decoder's batch), got {samples}")
    return samples


def padded(rows: list[list[int]], device: torch.device) -> torch.Tensor:
    """Token id lists as one (rows, longest) tensor padded with PAD_ID, on ``device``."""
    batch = torch.full((len(rows), max(len(ids) for ids in rows)), PAD_ID, dtype=torch.long)
    for r, ids in enumerate(rows):
        batch[r, :len(ids)] = torch.tensor(ids, dtype=torch.long)
    return batch.to(device)


PARALLEL_BATCHES = True
MAX_BATCH_WORKERS = 4


def run_batches(decode_batch, batches: list[list[int]], device: torch.device, ordered: bool = False) -> None:
    """Call ``decode_batch`` on every batch.

    On CPU with several threads, several batches are decoded at once, each by its own thread with its
    share of torch's threads (2 cores: two batches of one thread each), instead of one batch after another
    with all threads on each operation. Most of a decoding step is small operations that two threads
    share badly (each one a fork and a join, and a wait whenever the other core is busy elsewhere), so
    whole batches in parallel decode more sentences per second (beam 5, batches of 64, 2 cores: see
    docs/performance/index.md), with the same translations: every batch is decoded as it would be alone on its threads, and the
    operations release the interpreter lock (MKL, the matrix library on Intel and AVX2-only AMD CPUs, may
    round a small product differently on another number of threads, so a near-tie can go the other way than
    with all threads on one batch). ``ordered``: keep the batches in order (sampling draws from one
    generator). torch's thread count is process-wide: it is lowered for the call and put back after.
    """
    threads = torch.get_num_threads()
    workers = min(threads, len(batches), MAX_BATCH_WORKERS)
    if not PARALLEL_BATCHES or ordered or device.type != "cpu" or workers < 2:
        for rows in batches:
            decode_batch(rows)
        return
    torch.set_num_threads(threads // workers)
    pool = ThreadPoolExecutor(workers, thread_name_prefix="transformer-mt-decode")
    try:
        for future in [pool.submit(decode_batch, rows) for rows in batches]:
            future.result()
    finally:
        # On an error or Ctrl-C the batches not yet started are dropped, those running finish.
        pool.shutdown(wait=True, cancel_futures=True)
        torch.set_num_threads(threads)


CHECKPOINT_NAMES = {"best": "checkpoint_best.pt", "last": "checkpoint_last.pt", "average": "checkpoint_average.pt"}


def find_checkpoint(run_dir, checkpoint: str = "best") -> Path:
    """Resolve 'best' / 'last' / 'average' or a file path to a checkpoint file of a run."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        what = "is not a directory" if run_dir.exists() else "does not exist"
        raise TransformerMTError(f"run directory {run_dir} {what}; pass the --output-dir of a training run")
    if (run_dir / "export.json").is_file() and not (run_dir / CHECKPOINT_NAMES["last"]).exists():
        raise TransformerMTError(f"{run_dir} is a CTranslate2 export, not a run directory; translate it with "
                                 f"--engine ctranslate2")
    if checkpoint in CHECKPOINT_NAMES:
        path = run_dir / CHECKPOINT_NAMES[checkpoint]
        if checkpoint == "best" and not path.exists():
            path = run_dir / CHECKPOINT_NAMES["last"]
        if not path.exists():
            raise TransformerMTError(
                f"run directory {run_dir} has no {CHECKPOINT_NAMES[checkpoint]}; has training saved a "
                f"checkpoint there yet?"
            )
        return path
    path = Path(checkpoint)
    if not path.is_absolute() and not path.exists():
        path = run_dir / checkpoint
    if not path.exists():
        raise TransformerMTError(f"checkpoint {checkpoint} not found (looked in {run_dir})")
    return path


class Translator:
    def __init__(self, model: Transformer, src_tokenizer: Tokenizer, tgt_tokenizer: Tokenizer, config: Config,
                 device: torch.device, precision: str = "fp32", shortlist: Shortlist | None = None):
        self.model = model.to(device).eval()
        self.src_tokenizer = src_tokenizer
        self.tgt_tokenizer = tgt_tokenizer
        self.config = config
        self.device = device
        self.precision = precision
        # A lexical shortlist (shortlist.py): every translate() computes only its rows of the output layer.
        self.shortlist = shortlist

    @classmethod
    def from_run(cls, run_dir, checkpoint: str = "best", device: str | None = "auto",
                 precision: str = "fp32", quantize: bool = False, shortlist: bool | str | Path = False,
                 shortlist_top_k: int | None = None, shortlist_frequent: int | None = None) -> Translator:
        """Load a trained model from a run directory (``checkpoint``: best, last, average or a path).

        ``quantize``: the linear layers multiply in int8 (CPU only; ``kernels.Int8Linear``).
        ``shortlist``: True, decode with the run's lexical shortlist (``shortlist.npz``, see shortlist.py), or a
        shortlist file's path; ``shortlist_top_k``/``shortlist_frequent``: lexicon entries per source piece and
        frequent target pieces it takes (default: those the file was built with).
        """
        run_dir = Path(run_dir)
        resolved = resolve_device(device)
        if precision == "fp16" and resolved.type != "cuda":  # before loading, and naming the option, not training's
            raise TransformerMTError(f"--precision fp16 needs a CUDA device (this is {resolved.type}); use bf16 or "
                                     f"fp32")
        path = find_checkpoint(run_dir, checkpoint)
        state = load_checkpoint(path)
        config = config_from_dict(state["config"], source=f"config stored in {path}")
        src_tok, tgt_tok = load_tokenizers(run_dir, config.tokenizer.joint, config.tokenizer.vocabulary)
        vocab = state.get("vocab_sizes", {})
        if vocab.get("src") != len(src_tok) or vocab.get("tgt") != len(tgt_tok):
            raise TransformerMTError(
                f"checkpoint {path} was trained with vocabulary sizes {vocab}, but the tokenizer in {run_dir} "
                f"has {len(src_tok)}/{len(tgt_tok)} pieces; the checkpoint belongs to another run"
            )
        check_tokenizer_checksums(state, src_tok.model_path, tgt_tok.model_path, path,
                                  ids_paths=id_lists(src_tok, tgt_tok))
        model = build_model(config.model, len(src_tok), len(tgt_tok), PAD_ID)
        try:
            model.load_state_dict(state["model"])
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()
            raise TransformerMTError(
                f"checkpoint {path} does not match the model its config describes "
                f"({first[1].strip() if len(first) > 1 else first[0]}); it was written by an incompatible "
                f"configuration or version"
            ) from None
        if quantize:
            if resolved.type != "cpu":
                raise TransformerMTError("int8 quantization runs on the CPU only; use --device cpu")
            if precision != "fp32":
                raise TransformerMTError(f"--quantize computes in int8 with float32 around it; it cannot be "
                                         f"combined with --precision {precision}: leave one of them out")
            quantize_linear_layers(model)
        chosen = None
        if shortlist is not False and shortlist is not None:
            chosen = Shortlist.load(shortlist_path(run_dir) if shortlist is True else shortlist, src_tok, tgt_tok,
                                    shortlist_top_k, shortlist_frequent)
        return cls(model, src_tok, tgt_tok, config, resolved, precision, chosen)

    @classmethod
    def from_runs(cls, run_dirs: list, checkpoint: str = "best", device: str | None = "auto",
                  precision: str = "fp32", quantize: bool = False, shortlist: bool | str | Path = False,
                  shortlist_top_k: int | None = None, shortlist_frequent: int | None = None) -> Translator:
        """An ensemble of the runs' models (ensemble.py), or with one run that run's Translator. The runs must
        share their tokenizers; the decoding defaults (beam size, ...) and the shortlist are the first run's."""
        run_dirs = list(run_dirs)
        if not run_dirs:
            raise TransformerMTError("give at least one run directory")
        members = [cls.from_run(run_dir, checkpoint, device, precision, quantize,
                                shortlist if k == 0 else False, shortlist_top_k, shortlist_frequent)
                   for k, run_dir in enumerate(run_dirs)]
        if len(members) == 1:
            return members[0]
        check_members(members, [str(run_dir) for run_dir in run_dirs])
        first = members[0]
        return cls(Ensemble([member.model for member in members]), first.src_tokenizer, first.tgt_tokenizer,
                   first.config, first.device, precision, first.shortlist)

    @property
    def aligns(self) -> bool:
        """Whether translate() gives word alignments (one model does; an ensemble's members attend differently)."""
        return not isinstance(self.model, Ensemble)

    def _prefix_ids(self, prefix, count: int) -> list[list[int]] | None:
        """translate()'s ``prefix`` as target ids per sentence (None: no sentence has one)."""
        if prefix is None:
            return None
        if isinstance(prefix, str):
            prefix = [prefix] * count
        if not isinstance(prefix, (list, tuple)) or not all(isinstance(p, str) for p in prefix):
            raise TransformerMTError("prefix must be a text (for every sentence) or a list of texts, one per sentence")
        if len(prefix) != count:
            raise TransformerMTError(f"prefix: {len(prefix)} prefixes for {count} sentences; give one per sentence "
                                     f"(\"\" for none) or one text for all")
        ids = self.tgt_tokenizer.encode([p.strip() for p in prefix])
        longest = max(range(count), key=lambda i: len(ids[i]), default=None)
        if longest is not None and len(ids[longest]) > MAX_PREFIX_TOKENS:
            raise TransformerMTError(f"prefix: the prefix of sentence {longest + 1} is {len(ids[longest])} tokens "
                                     f"long; at most {MAX_PREFIX_TOKENS} are forced (a prefix starts a translation)")
        return ids if any(ids) else None

    def _continuations(self) -> torch.Tensor:
        """(V,) bool on the device: the target pieces that continue the word before them (no word-start mark,
        a letter or digit first), which constrained search keeps from gluing onto a glossary term."""
        if getattr(self, "_continuation_mask", None) is None:
            pieces = self.tgt_tokenizer.id_to_piece(list(range(len(self.tgt_tokenizer))))
            self._continuation_mask = torch.tensor([not p.startswith("\u2581") and p[:1].isalnum() for p in pieces],
                                                   device=self.device)
        return self._continuation_mask

    def _constraint_ids(self, sentences: list[str], glossary, constraints) -> list[list[list[int]]] | None:
        """translate()'s glossary terms and constraints as target ids per sentence (None: no sentence has any)."""
        if glossary is None and constraints is None:
            return None
        per_sentence: list[list[str]] = [[] for _ in sentences]
        if glossary is not None:
            if not isinstance(glossary, Glossary):
                glossary = Glossary.from_entries(glossary)
            per_sentence = glossary.constraints(sentences)
        if constraints is not None:
            if (not isinstance(constraints, (list, tuple)) or len(constraints) != len(sentences)
                    or not all(isinstance(c, (list, tuple)) and all(isinstance(p, str) for p in c)
                               for c in constraints)):
                raise TransformerMTError(f"constraints must be a list with one list of target phrases per sentence "
                                         f"({len(sentences)}), [] for none")
            per_sentence = [own + [p for p in given if p.strip() and p not in own]
                            for own, given in zip(per_sentence, constraints)]
        cut = [k + 1 for k, phrases in enumerate(per_sentence) if len(phrases) > MAX_CONSTRAINTS]
        if cut:
            log.warning("%d sentence(s) (the first: %d) hold more than %d glossary terms or constraints; only the "
                        "first %d of each are kept", len(cut), cut[0], MAX_CONSTRAINTS, MAX_CONSTRAINTS)
        flat = [phrase.strip() for phrases in per_sentence for phrase in phrases[:MAX_CONSTRAINTS]]
        if not flat:
            return None
        encoded = self.tgt_tokenizer.encode(flat)
        for phrase, phrase_ids in zip(flat, encoded):
            if UNK_ID in phrase_ids:  # kept, it would come out as "⁇" (and the search would build words around it)
                unknown = [char for char in dict.fromkeys(phrase)
                           if not char.isspace() and UNK_ID in self.tgt_tokenizer.encode([char])[0]]
                shown = ", ".join(repr(char) for char in unknown[:8]) or "a word of it"
                raise TransformerMTError(f"the target term {phrase!r} (of the glossary or constraints) cannot be "
                                         f"written by this model: its target vocabulary has no piece for {shown}; "
                                         f"write the term with characters the model's language uses, or leave it out")
        ids = iter(encoded)
        return [[next(ids) for _ in phrases[:MAX_CONSTRAINTS]] for phrases in per_sentence]

    def translate(self, sentences: list[str], beam_size: int | None = None, nbest: int | None = None,
                  length_penalty: float | None = None, batch_size: int | None = None,
                  max_length_a: float | None = None, max_length_b: int | None = None,
                  incremental: bool = True, early_exit: bool | None = None, return_scores: bool = False,
                  return_alignment: bool = False, alignment_unit: str = "pieces", alignment_layer: int | None = None,
                  target_language: str | None = None, temperature: float | None = None, top_k: int | None = None,
                  top_p: float | None = None, seed: int | None = None, no_repeat_ngram_size: int | None = None,
                  repetition_penalty: float | None = None, prefix: str | list[str] | None = None,
                  glossary: Glossary | list | None = None, constraints: list[list[str]] | None = None):
        """Translate a list of sentences.

        Returns a list of strings, or with ``nbest`` > 1 a list of lists of
        ``nbest`` strings (best first). Defaults come from the run's decoding config.
        ``incremental=False`` decodes without the key/value cache (slow; the reference
        that cached decoding must match, see scripts/benchmark.py --check-exact).
        ``early_exit`` (default: decoding.early_exit) ends a sentence's beam search when its
        best candidate ends, instead of waiting for beam_size finished hypotheses.
        ``return_scores=True`` returns for each sentence a list of up to ``nbest``
        :class:`Translation` (text, score), best first (beam search also for beam size 1,
        which gives greedy search's output with its score); an empty input gives ("", 0.0).
        ``return_alignment=True`` returns for each sentence a list of up to ``nbest``
        :class:`AlignedTranslation` (text, score, alignment, source_tokens, target_tokens), best
        first: each target piece aligned to the source piece the head-averaged cross-attention
        of decoder layer ``alignment_layer`` (numbered from 1; default: the penultimate) weighs
        most; ``alignment_unit="words"`` lifts the pairs to words (see alignment.py). The
        weights are computed only then; an empty input gives ("", 0.0, [], [], []).
        ``target_language`` (e.g. "fra"): for a multilingual model (OPUS-MT ``>>fra<<`` tokens, or a run trained
        here on several directions), the language to translate into; required where it has several targets.

        Sampling (on when any of ``temperature``, ``top_k``, ``top_p`` is given; no beam): each token is
        drawn from the model's distribution, divided by ``temperature`` (0: the most probable token),
        limited to the ``top_k`` most probable tokens (0: all) and to the fewest whose probability adds up
        to ``top_p`` (1: all); ``nbest`` samples per sentence, best first by score; ``seed`` makes them
        reproducible (same seed, sentences and batch size: same samples). ``no_repeat_ngram_size`` N > 0:
        no n-gram of N tokens appears twice in a translation; ``repetition_penalty`` P: a token already in
        the translation has its log-probability multiplied by P (default for both: the run's config, off).
        ``prefix``: a text every translation starts with, or a list of them, one per sentence ("" for
        none); beam search continues from it, and its tokens count in the length limit and the score.

        ``glossary`` (a :class:`~transformer_mt.text.glossary.Glossary`, or ``[[source term, target term], ...]``):
        in each sentence, the target terms of the entries whose source term it holds must appear in its
        translation; ``constraints``: per sentence, a list of target phrases that must appear. Both are lexical
        constraints of beam search (decoding/constraints.py; beam size 1 too), not of sampling.
        """
        search = search_options(temperature, top_k, top_p, seed, no_repeat_ngram_size, repetition_penalty,
                                self.config.decoding)
        samples = 1
        if search.sampling:
            samples = sample_count(beam_size, nbest, return_alignment)
            beam_size, nbest = 1, 1  # checked as greedy search; nbest is the number of samples again below
        beam_size, nbest, length_penalty, batch_size, max_length_a, max_length_b, early_exit = resolve_decoding(
            self.config, beam_size, nbest, length_penalty, batch_size, max_length_a, max_length_b, early_exit)
        nbest = max(nbest, samples)
        if return_alignment:
            if not self.aligns:
                raise TransformerMTError("alignments come from one model's attention; an ensemble's members attend "
                                         "differently: give one model")
            alignment_unit = check_alignment_unit(alignment_unit)
            alignment_layer = check_alignment_layer(alignment_layer, len(self.model.decoder_layers))
        encoded = encode_sentences(sentences, self.src_tokenizer, self.config, target_language)
        prefixes = self._prefix_ids(prefix, len(encoded))
        phrases = self._constraint_ids(sentences, glossary, constraints)
        if phrases is not None and search.sampling:
            raise TransformerMTError("glossary terms and constraints are kept by beam search; leave out sampling "
                                     "(temperature, top_k, top_p) or the glossary")
        repetition = search.repetition
        sampler = search.sampler(self.device) if search.sampling else None
        plain = prefixes is None and repetition is None and phrases is None
        results: list[list[str]] = [[""] * nbest for _ in sentences]
        scored: list[list[Translation]] = [[Translation("", 0.0)] for _ in sentences]
        aligned: list[list[AlignedTranslation]] = [[AlignedTranslation("", 0.0, [], [], [])] for _ in sentences]
        order = sorted((i for i, ids in enumerate(encoded) if ids), key=lambda i: len(encoded[i]), reverse=True)

        def decode_batch(rows: list[int]) -> None:
            src = padded([encoded[i] for i in rows], self.device)
            batch_prefix = None
            if prefixes is not None and any(prefixes[i] for i in rows):
                batch_prefix = padded([prefixes[i] for i in rows], self.device)
            batch_phrases = None if phrases is None else [phrases[i] for i in rows]
            continuations = None if phrases is None else self._continuations()
            model, vocabulary = self.model, None
            if self.shortlist is not None:  # search over the batch's shortlist (shortlist.py), its ids mapped
                forced = [] if batch_prefix is None else [t for i in rows for t in prefixes[i]]
                forced += [t for sentence in batch_phrases or () for phrase in sentence for t in phrase]
                vocabulary = BatchVocabulary(self.shortlist.rows(src, PAD_ID, forced))
                model = vocabulary.model(self.model)
                if batch_prefix is not None:
                    batch_prefix = vocabulary.local_tensor(batch_prefix)
                if batch_phrases is not None:
                    batch_phrases = [[vocabulary.local(phrase) for phrase in sentence] for sentence in batch_phrases]
                    continuations = continuations[vocabulary.rows]
            with autocast(self.device, self.precision):
                if sampler is None and beam_size == 1 and not return_scores and not return_alignment and plain:
                    outputs = [[tokens if vocabulary is None else vocabulary.full(tokens)]
                               for tokens in greedy_search(model, src, max_length_a, max_length_b, incremental)]
                else:
                    if sampler is not None:
                        hyps = sample_search(model, src, sampler, samples, length_penalty, max_length_a,
                                             max_length_b, repetition, batch_prefix)
                    else:  # beam size 1 with a prefix or repetition options: beam search of one beam is greedy search
                        hyps = beam_search(model, src, beam_size, length_penalty, max_length_a, max_length_b,
                                           nbest, incremental, early_exit, return_attention=return_alignment,
                                           attention_layer=alignment_layer if return_alignment else None,
                                           repetition=repetition, prefix=batch_prefix,
                                           constraints=batch_phrases, continuations=continuations)
                    if vocabulary is not None:
                        for sentence_hyps in hyps:
                            for hyp in sentence_hyps:
                                hyp.tokens = vocabulary.full(hyp.tokens)
                    outputs = [[h.tokens for h in sentence_hyps] for sentence_hyps in hyps]
                    scores = [[h.score for h in sentence_hyps] for sentence_hyps in hyps]
            for row, (i, token_lists) in enumerate(zip(rows, outputs)):
                # One translation must stay one line of output, whatever a piece decodes to.
                texts = [" ".join(text.splitlines()) for text in self.tgt_tokenizer.decode(token_lists)]
                results[i] = (texts + [""] * nbest)[:nbest]
                if return_scores:
                    scored[i] = [Translation(text, score) for text, score in zip(texts, scores[row])][:nbest]
                if return_alignment:
                    aligned[i] = [self._aligned(text, hyp, encoded[i], alignment_unit)
                                  for text, hyp in zip(texts, hyps[row])][:nbest]

        batches = [order[start:start + batch_size] for start in range(0, len(order), batch_size)]
        # Sampling draws from one generator in batch order, so its batches stay in that order.
        run_batches(decode_batch, batches, self.device, ordered=sampler is not None)
        if return_alignment:
            return aligned
        if return_scores:
            return scored
        if nbest == 1:
            return [r[0] for r in results]
        return results

    def translate_text(self, texts: list[str], format: str = "text", split_sentences: bool | None = None,
                       **options) -> list[str]:
        """Translate texts, one translation each: paragraphs and documents (``format="text"``, lines and
        blank lines kept) or HTML (``format="html"``, structure kept, inline tags placed by word
        alignments). Each line (HTML block) is cut into sentences unless ``split_sentences`` is False
        (default: decoding.split_sentences); the sentences of all texts are translated in one batched
        :meth:`translate` call with ``options`` (beam_size, length_penalty, batch_size, ...). See
        decoding/paragraphs.py."""
        return translate_texts(self, texts, format=format, split_sentences=split_sentences, **options)

    def translate_document(self, data: bytes, filename: str, split_sentences: bool | None = None,
                           max_chars: int | None = None, **options) -> bytes:
        """Translate a document file (.txt, .html, .srt, .docx by ``filename``'s extension) and return the
        translated file, its structure and formatting kept (decoding/paragraphs.py, text/documents.py)."""
        return translate_document(self, data, filename, split_sentences=split_sentences, max_chars=max_chars,
                                  **options)

    def _aligned(self, text: str, hyp, source_ids: list[int], unit: str) -> AlignedTranslation:
        pairs = hard_alignment(hyp.attention["cross"], 1, len(hyp.tokens))  # search kept only that layer's mean
        source_pieces = self.src_tokenizer.id_to_piece(source_ids)
        target_pieces = self.tgt_tokenizer.id_to_piece(hyp.tokens)
        if unit == "words":
            pairs, source_pieces, target_pieces = word_alignment(pairs, source_pieces, target_pieces)
        return AlignedTranslation(text, hyp.score, pairs, source_pieces, target_pieces)

    def attention(self, sentence: str, beam_size: int | None = None, self_attention: bool = False,
                  max_length_a: float | None = None, max_length_b: int | None = None,
                  target_language: str | None = None) -> SentenceAttention:
        """Translate one sentence and return the attention weights its translation was made with.

        Greedy search when the beam size (default: decoding.beam_size) is 1, else beam search
        (its best hypothesis). ``self_attention=True`` also returns the decoder self-attention;
        ``target_language`` as in :meth:`translate`.
        """
        if not isinstance(sentence, str):
            raise TypeError("attention() takes one sentence (a string)")
        settings = resolve_decoding(self.config, beam_size, max_length_a=max_length_a, max_length_b=max_length_b)
        [source_ids] = encode_sentences([sentence], self.src_tokenizer, self.config, target_language)
        if not source_ids:
            raise TransformerMTError("the sentence is empty: give a sentence with some text to translate")
        src = torch.tensor([source_ids], dtype=torch.long, device=self.device)
        with autocast(self.device, self.precision):
            if settings.beam_size == 1:
                [tokens], [attention] = greedy_search(self.model, src, settings.max_length_a, settings.max_length_b,
                                                      return_attention=True, return_self_attention=self_attention)
                search = "greedy search (beam size 1)"
            else:
                [[best, *_]] = beam_search(self.model, src, settings.beam_size, settings.length_penalty,
                                           settings.max_length_a, settings.max_length_b, 1,
                                           early_exit=settings.early_exit, return_attention=True,
                                           return_self_attention=self_attention)
                tokens, attention = best.tokens, best.attention
                search = f"beam search (beam size {settings.beam_size})"
        target_pieces = self.tgt_tokenizer.id_to_piece(tokens)
        cross = attention["cross"].cpu()
        if cross.size(2) > len(tokens):  # the last step predicted the end token
            target_pieces.append(self.tgt_tokenizer.id_to_piece(EOS_ID))
        text = " ".join(self.tgt_tokenizer.decode([tokens])[0].splitlines())
        return SentenceAttention(text, self.src_tokenizer.id_to_piece(source_ids), target_pieces, cross,
                                 attention["self"].cpu() if self_attention else None, search)
