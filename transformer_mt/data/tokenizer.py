"""SentencePiece tokenization: train the models (or take given ones), map text <-> ids.

Special ids are fixed for every model: pad 0, unk 1, bos 2, eos 3. The
models live inside the run directory (``spm.model`` for a joint vocabulary,
``spm.src.model`` and ``spm.tgt.model`` otherwise), so a run directory is all
a translator needs. Training again reuses models that are already there.

Existing models (``tokenizer.model``, or ``tokenizer.source_model`` and
``tokenizer.target_model``) are checked when the config is read and copied
into the run directory under those same names instead of training one.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import itertools
import json
import logging
import os
import random
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import sentencepiece as spm

from ..config import TokenizerConfig
from ..errors import TransformerMTError
from ..files import file_problem, file_sha256
from ..safe_files import (
    open_for_reading,
    open_regular_file,
    open_run_file,
    read_user_file,
    regular_file_problem,
    write_run_file,
)
from .tokenizer_files import BOS_ID, EOS_ID, MAX_IDS_BYTES, MAX_MODEL_BYTES, PAD_ID, UNK_ID, ids_paths, tokenizer_paths

log = logging.getLogger(__name__)


class Tokenizer:
    """One SentencePiece model: text -> list of ids (no bos/eos) and back."""

    def __init__(self, model_path, check_special_ids: bool = True):
        self.model_path = Path(model_path)
        problem = regular_file_problem(model_path)
        if problem is None and self.model_path.stat().st_size > MAX_MODEL_BYTES:
            problem = f"is {self.model_path.stat().st_size / 2**20:.0f} MiB, far more than any SentencePiece model"
        if problem is not None:
            raise TransformerMTError(f"tokenizer model {model_path} {problem}; copy the whole run directory again")
        try:
            self.sp = spm.SentencePieceProcessor(model_proto=read_user_file(model_path, "tokenizer model",
                                                                                limit=MAX_MODEL_BYTES))
        except (OSError, RuntimeError) as exc:
            raise TransformerMTError(
                f"tokenizer model {model_path} cannot be loaded ({exc}); the run directory is incomplete, "
                f"train again or copy the whole run directory"
            ) from None
        special = (self.sp.pad_id(), self.sp.unk_id(), self.sp.bos_id(), self.sp.eos_id())
        if check_special_ids and special != (PAD_ID, UNK_ID, BOS_ID, EOS_ID):
            raise TransformerMTError(
                f"tokenizer model {model_path} has special ids pad/unk/bos/eos = "
                f"{self.sp.pad_id()}/{self.sp.unk_id()}/{self.sp.bos_id()}/{self.sp.eos_id()}, expected 0/1/2/3"
            )

    def __len__(self) -> int:
        return self.sp.get_piece_size()

    def encode(self, texts: list[str]) -> list[list[int]]:
        return self.sp.encode(texts)

    def encode_flat(self, texts: list[str], num_threads: int) -> tuple[np.ndarray, np.ndarray]:
        """The ids of all ``texts`` one after another (int32) and each text's length (int64), encoded by
        ``num_threads`` SentencePiece threads. (Its numpy output, where there is one, is no faster: it makes
        a numpy array per sentence.)"""
        sequences = self.sp.encode(texts, num_threads=num_threads)
        lengths = np.fromiter(map(len, sequences), dtype=np.int64, count=len(sequences))
        ids = np.fromiter(itertools.chain.from_iterable(sequences), dtype=np.int32, count=int(lengths.sum()))
        return ids, lengths

    def decode(self, ids: list[list[int]]) -> list[str]:
        return self.sp.decode(ids)

    def pieces(self, text: str) -> list[str]:
        return self.sp.encode(text, out_type=str)

    def id_to_piece(self, ids: list[int]) -> list[str]:
        return self.sp.id_to_piece(ids)

    def piece_to_id(self, pieces: list[str]) -> list[int]:
        return self.sp.piece_to_id(pieces)

    def language_codes(self) -> list[str]:
        """Target-language tokens (``>>fra<<``) a multilingual model's sources start with; none here."""
        return []


SPECIAL_IDS = {PAD_ID, UNK_ID, BOS_ID, EOS_ID}
WORD_MARK = "\u2581"  # SentencePiece's "▁", the space before a word

# A source starting with one of these picks a multilingual model's target language (OPUS-MT's >>fra<<).
LANGUAGE_CODE = re.compile(r">>[^<>\s]+<<")


class MappedTokenizer(Tokenizer):
    """A SentencePiece model whose pieces map to the model's ids through a list of pieces (``*.ids.json``).

    Imported models number their vocabulary their own way (OPUS-MT's vocab.json: one list for the
    pieces of two SentencePiece models, plus ``>>xx<<`` language tokens), so SentencePiece's ids
    are not the model's. Pieces missing from the list become unk; ids 0-3 are pad/unk/bos/eos.
    """

    def __init__(self, model_path, ids_path):
        super().__init__(model_path, check_special_ids=False)
        self.ids_path = Path(ids_path)
        try:
            pieces = json.loads(read_user_file(self.ids_path, "vocabulary", limit=MAX_IDS_BYTES).decode("utf-8"))
        except (OSError, ValueError) as exc:
            raise TransformerMTError(f"vocabulary {ids_path} cannot be read ({exc}); the run directory is "
                                     f"incomplete, import or copy it again") from None
        if (not isinstance(pieces, list) or len(pieces) < 4 or not all(isinstance(p, str) for p in pieces)
                or len(set(pieces)) != len(pieces)):
            raise TransformerMTError(f"vocabulary {ids_path} is not a list of distinct pieces; import it again")
        self.id_pieces = pieces
        self.ids = {piece: i for i, piece in enumerate(pieces)}
        # SentencePiece id -> model id, so that encoding stays one vectorised lookup.
        self.sp_to_id = np.array([self.ids.get(self.sp.id_to_piece(i), UNK_ID)
                                  for i in range(self.sp.get_piece_size())], dtype=np.int32)
        self.codes = [piece for piece in pieces if LANGUAGE_CODE.fullmatch(piece)]

    def __len__(self) -> int:
        return len(self.id_pieces)

    def _encode_one(self, text: str) -> list[int]:
        """A leading language token (``>>fra<<``) is one id, the rest SentencePiece's pieces (as Marian does)."""
        code = LANGUAGE_CODE.match(text) if self.codes else None
        prefix = [self.ids.get(code.group(), UNK_ID)] if code else []
        ids = self.sp.encode(text[code.end():] if code else text)
        return prefix + self.sp_to_id[ids].tolist()

    def encode(self, texts: list[str]) -> list[list[int]]:
        return [self._encode_one(text) for text in texts]

    def encode_flat(self, texts: list[str], num_threads: int) -> tuple[np.ndarray, np.ndarray]:
        sequences = self.encode(texts)
        lengths = np.fromiter(map(len, sequences), dtype=np.int64, count=len(sequences))
        ids = np.fromiter(itertools.chain.from_iterable(sequences), dtype=np.int32, count=int(lengths.sum()))
        return ids, lengths

    def decode(self, ids: list[list[int]]) -> list[str]:
        """Text as transformers' MarianTokenizer.batch_decode(..., skip_special_tokens=True) gives it.

        A joint vocabulary holds pieces that the target SentencePiece model does not (the source
        model's: names, numbers), and a model may generate them. SentencePiece returns such a piece
        as it is, word marks ("\u2581") included; Marian's tokenizer then turns every mark left into a
        space and strips the ends. So does this. The special ids (pad, unk, bos, eos) are not text.
        """
        return [self.sp.decode_pieces([self.id_pieces[i] for i in row if i not in SPECIAL_IDS])
                .replace(WORD_MARK, " ").strip() for row in ids]

    def id_to_piece(self, ids: list[int] | int) -> list[str] | str:
        return self.id_pieces[ids] if isinstance(ids, int) else [self.id_pieces[i] for i in ids]

    def piece_to_id(self, pieces: list[str]) -> list[int]:
        return [self.ids.get(piece, UNK_ID) for piece in pieces]

    def language_codes(self) -> list[str]:
        return self.codes


@contextlib.contextmanager
def _stderr_to(stream):
    """Send file descriptor 2 to ``stream`` (SentencePiece's C++ logging writes there directly)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        os.dup2(stream.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _has_text(path: Path) -> bool:
    """Whether ``path`` has a line that is not only white space (stops at the first one)."""
    try:
        with io.TextIOWrapper(open_for_reading(path), encoding="utf-8", errors="replace") as lines:
            return any(line.strip().lstrip("\ufeff") for line in lines)
    except OSError as exc:
        raise TransformerMTError(f"training file {path} cannot be read: {exc.strerror}") from None


def _check_training_text(input_files: list[Path]) -> None:
    # SentencePiece would stop with "INTERNAL: ... [!sentences_.empty()]", which names no file.
    for path in input_files:
        if not _has_text(path):
            raise TransformerMTError(
                f"training file {path} has no non-blank lines; put the training sentences in it, one per line "
                f"(or point 'data.root' / 'data.train_prefix' at the right files)"
            )


# Same config and data, same spm.model bytes, in any run directory and on any machine:
# - SentencePiece's own sample of a large corpus (shuffle_input_sentence) draws from a generator it seeds
#   itself (set_random_generator_seed does not reach it in sentencepiece 0.2), so the sample is drawn here,
#   with a fixed seed;
# - the model records the paths of its input files and its output prefix: the lines are given to it as a
#   stream and the model comes back in memory, so it records neither (nor the user's directories);
# - its result depends on its number of threads, so that is fixed (to its default), whatever the machine.
SAMPLE_SEED = 1
SPM_LOG_HEAD_BYTES = 1 << 20  # SentencePiece's log says how many sentences it used near its start
SPM_THREADS = 16


def _count_lines(path: Path) -> int:
    newlines, last = 0, b"\n"
    with open_for_reading(path) as handle:
        while block := handle.read(1 << 20):
            newlines += block.count(b"\n")
            last = block[-1:]
    return newlines + (last != b"\n")


def _training_lines(input_files: list[Path], limit: int) -> tuple[Iterator[bytes], str | None]:
    """The lines to train on (all, or ``limit`` of them chosen with SAMPLE_SEED), and what that sample is."""
    total = sum(_count_lines(path) for path in input_files)
    chosen = None
    if 0 < limit < total:
        chosen = iter(sorted(random.Random(SAMPLE_SEED).sample(range(total), limit)))

    def lines() -> Iterator[bytes]:
        wanted = next(chosen, None) if chosen is not None else None
        position = 0
        for path in input_files:
            with open_for_reading(path) as handle:
                for line in handle:
                    if chosen is None or position == wanted:
                        yield line.rstrip(b"\n")
                        if chosen is not None:
                            wanted = next(chosen, None)
                    position += 1

    return lines(), (f"a sample of {limit:,} of its {total:,} sentences" if chosen is not None else None)


def _train_one(input_files: list[Path], model_prefix: Path, cfg: TokenizerConfig, symbols: list[str] = ()) -> None:
    _check_training_text(input_files)
    log.info("training SentencePiece %s model (%d pieces) on %s", cfg.model_type, cfg.vocab_size,
             ", ".join(str(p) for p in input_files))
    # Corpus tags (data.train_corpora) are pieces of their own, never split; only passed when there are
    # some, so that configs without tags train byte-identical models as before.
    extra = {"user_defined_symbols": list(symbols)} if symbols else {}
    # SentencePiece logs verbosely to a file descriptor; keep its log in the run directory.
    log_path = model_prefix.with_name(model_prefix.name + ".train.log")
    model = io.BytesIO()
    try:
        lines, sample = _training_lines(input_files, cfg.input_sentence_size)
        with open_run_file(log_path, "w") as log_stream, _stderr_to(log_stream):
            spm.SentencePieceTrainer.train(
                sentence_iterator=lines,
                model_writer=model,
                vocab_size=cfg.vocab_size,
                model_type=cfg.model_type,
                character_coverage=cfg.character_coverage,
                input_sentence_size=cfg.input_sentence_size,
                shuffle_input_sentence=False,  # sampled above, reproducibly
                num_threads=SPM_THREADS,
                pad_id=PAD_ID, unk_id=UNK_ID, bos_id=BOS_ID, eos_id=EOS_ID,
                # Multi-digit numbers split into digits generalise better on small data.
                split_digits=True,
                logstream=log_stream,
                **extra,
            )
    except RuntimeError as exc:
        message = str(exc).strip()
        if "smaller than required_chars" in message:
            raise TransformerMTError(
                f"tokenizer.vocab_size {cfg.vocab_size} is smaller than the number of distinct characters "
                f"to cover ({message}); raise 'tokenizer.vocab_size' or lower 'tokenizer.character_coverage'"
            ) from None
        if "too high" in message or "too large" in message:
            limit = re.search(r"<= (\d+)", message)
            most = f" (at most {limit.group(1)} here)" if limit else ""
            raise TransformerMTError(
                f"tokenizer.vocab_size {cfg.vocab_size} is too large for the training text{most}; "
                f"lower 'tokenizer.vocab_size' in the config"
            ) from None
        if "sentences_.empty()" in message or "all_chars_count" in message:
            # Lines of only characters that SentencePiece normalizes away (zero-width spaces, controls, ...).
            raise TransformerMTError(
                f"SentencePiece found no text to learn from in {', '.join(str(p) for p in input_files)}: "
                f"every line is empty once normalized; put the training sentences there, one per line"
            ) from None
        raise TransformerMTError(f"SentencePiece training failed on {[str(p) for p in input_files]}: {message}") from None
    # Written atomically (an interrupted run never leaves half a tokenizer to be "reused"), the model last:
    # its presence is what says the tokenizer is done. The .vocab file (piece, score) is for people to read.
    processor = spm.SentencePieceProcessor(model_proto=model.getvalue())
    vocab = "".join(f"{processor.id_to_piece(i)}\t{processor.get_score(i):g}\n" for i in range(len(processor)))
    write_run_file(model_prefix.with_name(model_prefix.name + ".vocab"), vocab)
    write_run_file(model_prefix.with_name(model_prefix.name + ".model"), model.getvalue())
    log.info("SentencePiece model %s.model learnt from %s (tokenizer.input_sentence_size=%d)", model_prefix,
             sample or _sentences_used(log_path), cfg.input_sentence_size)


def _sentences_used(log_path: Path) -> str:
    """How many sentences SentencePiece trained on, from its log: it reads the files itself and keeps a
    random sample of tokenizer.input_sentence_size sentences, so memory stays bounded on any corpus."""
    try:
        # The counts are in its first lines: a bounded start of the log, never all of it.
        with open_regular_file(log_path) as handle:
            text = handle.read(SPM_LOG_HEAD_BYTES).decode("utf-8", errors="replace")
    except OSError:
        text = ""
    sampled = re.search(r"Sampled (\d+) sentences from (\d+) sentences", text)
    if sampled:
        return f"a sample of {int(sampled[1]):,} of its {int(sampled[2]):,} sentences"
    loaded = re.search(r"Loaded all (\d+) sentences", text)
    if loaded:
        return f"all {int(loaded[1]):,} sentences"
    return "its sentences (SentencePiece's log does not say how many)"


def given_models(cfg: TokenizerConfig) -> tuple[tuple[Path, str], tuple[Path, str]] | None:
    """The (source, target) models the config names, each with its config key, or None to train them."""
    if cfg.model:
        return (Path(cfg.model), "'tokenizer.model'"), (Path(cfg.model), "'tokenizer.model'")
    if cfg.source_model:
        return ((Path(cfg.source_model), "'tokenizer.source_model'"),
                (Path(cfg.target_model), "'tokenizer.target_model'"))
    return None


def copy_given_model(given: Path, copy: Path, origin: str) -> None:
    """Put the existing model ``given`` into the run as ``copy`` (written whole or not at all).

    A copy already there (a resumed run, or a second start) is reused only if it is the same
    file: a run must keep the tokenizer its checkpoints were trained with. ``origin`` names
    where ``given`` comes from in messages (a config key, a parent run).
    """
    digest = file_sha256(given)
    if copy.exists():
        if file_sha256(copy) != digest:
            raise TransformerMTError(
                f"{origin} {given} is not the tokenizer this run started with ({copy} differs: SHA-256 "
                f"{file_sha256(copy)[:12]}... instead of {digest[:12]}...); train into a new --output-dir, or pass "
                f"--overwrite to start this run again")
        log.info("reusing tokenizer %s (a copy of %s, SHA-256 %s)", copy, given, digest)
        return
    content = read_user_file(given, origin, limit=MAX_MODEL_BYTES)  # by descriptor, bounded
    if hashlib.sha256(content).hexdigest() != digest:
        raise TransformerMTError(f"{origin} {given} changed while it was copied into the run; try again")
    write_run_file(copy, content)  # atomic, and never through a link planted in the run directory
    log.info("tokenizer %s: a copy of %s (SHA-256 %s)", copy, given, digest)


def build_tokenizers(run_dir, cfg: TokenizerConfig, src_train: Path | list[Path], tgt_train: Path | list[Path],
                     given: tuple[tuple[Path, str], tuple[Path, str]] | None = None,
                     symbols: list[str] = ()) -> tuple[Tokenizer, Tokenizer]:
    """Train (or reuse, or copy in) the source and target tokenizers of a run.

    ``src_train``/``tgt_train``: the training file(s) of each side. ``given``: existing (source,
    target) models to copy in instead of training, each with the words that say where it comes
    from; by default those the config names (see given_models). ``symbols``: pieces a trained
    source model must keep whole (corpus tags).
    """
    src_path, tgt_path = tokenizer_paths(run_dir, cfg.joint)
    given = given or given_models(cfg)
    mapped = cfg.vocabulary != "sentencepiece"
    if mapped and given is None and not all(path.is_file() for path in (src_path, tgt_path, *ids_paths(run_dir))):
        raise TransformerMTError(
            f"'tokenizer.vocabulary: {cfg.vocabulary}' maps the pieces of existing SentencePiece models to a "
            f"model's ids; it is set by 'transformer-mt import': train from such a run with 'training.init_from'")
    if given is not None:
        for (model, origin), copy in zip(given[:1] if cfg.joint else given, (src_path, tgt_path)):
            copy_given_model(model, copy, origin)
        if mapped:
            for (model, origin), copy in zip(given, ids_paths(run_dir)):
                copy_given_model(model.with_name(model.name.removesuffix(".model") + ".ids.json"), copy, origin)
    if mapped:  # copied in now, or when the run started (it resumes)
        return load_tokenizers(run_dir, cfg.joint, cfg.vocabulary)
    if given is None:
        _train_missing(cfg, src_path, tgt_path, _as_list(src_train), _as_list(tgt_train), list(symbols))
    if cfg.joint:
        tokenizer = Tokenizer(src_path)
        return tokenizer, tokenizer
    return Tokenizer(src_path), Tokenizer(tgt_path)


def _as_list(paths) -> list[Path]:
    return [Path(p) for p in paths] if isinstance(paths, (list, tuple)) else [Path(paths)]


def _train_missing(cfg: TokenizerConfig, src_path: Path, tgt_path: Path, src_train: list[Path],
                   tgt_train: list[Path], symbols: list[str]) -> None:
    """Train the run's tokenizer(s) unless already there (``symbols``: in the source model)."""
    todo = ([(src_path, src_train + tgt_train, symbols)] if cfg.joint else
            [(src_path, src_train, symbols), (tgt_path, tgt_train, [])])
    for path, train_files, path_symbols in todo:
        if not path.exists():
            _train_one(train_files, path.with_suffix(""), cfg, path_symbols)
        else:
            log.info("reusing tokenizer %s", path)


def id_lists(src: Tokenizer, tgt: Tokenizer) -> tuple[Path, Path] | None:
    """The id list files of an imported model's tokenizers (checksummed with the models), or None."""
    if isinstance(src, MappedTokenizer) and isinstance(tgt, MappedTokenizer):
        return src.ids_path, tgt.ids_path
    return None


def load_tokenizers(run_dir, joint: bool, vocabulary: str = "sentencepiece") -> tuple[Tokenizer, Tokenizer]:
    src_path, tgt_path = tokenizer_paths(run_dir, joint)
    needed = {src_path, tgt_path} | (set(ids_paths(run_dir)) if vocabulary != "sentencepiece" else set())
    for path in sorted(needed):
        problem = file_problem(path, "a SentencePiece model file")
        if problem == "does not exist":
            raise TransformerMTError(
                f"tokenizer model {path} is missing; the run directory {run_dir} is incomplete "
                f"(was training started there?)"
            )
        if problem is not None:  # there, but a directory, a FIFO, a dangling link: not "missing"
            raise TransformerMTError(f"tokenizer model {path} {problem}; put the run's SentencePiece model file "
                                     f"there (copy the whole run directory again)")
    if vocabulary != "sentencepiece":
        src_ids, tgt_ids = ids_paths(run_dir)
        return MappedTokenizer(src_path, src_ids), MappedTokenizer(tgt_path, tgt_ids)
    src = Tokenizer(src_path)
    return (src, src) if joint else (src, Tokenizer(tgt_path))
