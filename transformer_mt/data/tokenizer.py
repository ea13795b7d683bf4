"""SentencePiece tokenization: train the models, map text <-> ids.

Special ids are fixed for every model: pad 0, unk 1, bos 2, eos 3. The
models live inside the run directory (``spm.model`` for a joint vocabulary,
``spm.src.model`` and ``spm.tgt.model`` otherwise), so a run directory is all
a translator needs. Training again reuses models that are already there.
"""

from __future__ import annotations

import contextlib
import io
import itertools
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
from ..safe_files import open_run_file, regular_file_problem, write_run_file

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3

log = logging.getLogger(__name__)


# SentencePiece reads a model file whole: a real one is a few MB (even 250k pieces); a huge or sparse
# file would only fill memory.
MAX_TOKENIZER_BYTES = 256 * 2**20


class Tokenizer:
    """One SentencePiece model: text -> list of ids (no bos/eos) and back."""

    def __init__(self, model_path):
        self.model_path = Path(model_path)
        problem = regular_file_problem(model_path)
        if problem is None and self.model_path.stat().st_size > MAX_TOKENIZER_BYTES:
            problem = f"is {self.model_path.stat().st_size / 2**20:.0f} MiB, far more than any SentencePiece model"
        if problem is not None:
            raise TransformerMTError(f"tokenizer model {model_path} {problem}; copy the whole run directory again")
        try:
            self.sp = spm.SentencePieceProcessor(model_file=str(model_path))
        except (OSError, RuntimeError) as exc:
            raise TransformerMTError(
                f"tokenizer model {model_path} cannot be loaded ({exc}); the run directory is incomplete, "
                f"train again or copy the whole run directory"
            ) from None
        if (self.sp.pad_id(), self.sp.unk_id(), self.sp.bos_id(), self.sp.eos_id()) != (PAD_ID, UNK_ID, BOS_ID, EOS_ID):
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
        with open(path, encoding="utf-8", errors="replace") as lines:
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
SPM_THREADS = 16


def _count_lines(path: Path) -> int:
    newlines, last = 0, b"\n"
    with open(path, "rb") as handle:
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
            with open(path, "rb") as handle:
                for line in handle:
                    if chosen is None or position == wanted:
                        yield line.rstrip(b"\n")
                        if chosen is not None:
                            wanted = next(chosen, None)
                    position += 1

    return lines(), (f"a sample of {limit:,} of its {total:,} sentences" if chosen is not None else None)


def _train_one(input_files: list[Path], model_prefix: Path, cfg: TokenizerConfig) -> None:
    _check_training_text(input_files)
    log.info("training SentencePiece %s model (%d pieces) on %s", cfg.model_type, cfg.vocab_size,
             ", ".join(str(p) for p in input_files))
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
        text = log_path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    sampled = re.search(r"Sampled (\d+) sentences from (\d+) sentences", text)
    if sampled:
        return f"a sample of {int(sampled[1]):,} of its {int(sampled[2]):,} sentences"
    loaded = re.search(r"Loaded all (\d+) sentences", text)
    if loaded:
        return f"all {int(loaded[1]):,} sentences"
    return "its sentences (SentencePiece's log does not say how many)"


def tokenizer_paths(run_dir, joint: bool) -> tuple[Path, Path]:
    run_dir = Path(run_dir)
    if joint:
        return run_dir / "spm.model", run_dir / "spm.model"
    return run_dir / "spm.src.model", run_dir / "spm.tgt.model"


def build_tokenizers(run_dir, cfg: TokenizerConfig, src_train: Path, tgt_train: Path) -> tuple[Tokenizer, Tokenizer]:
    """Train (or reuse) the source and target tokenizers of a run."""
    src_path, tgt_path = tokenizer_paths(run_dir, cfg.joint)
    if cfg.joint:
        if not src_path.exists():
            _train_one([src_train, tgt_train], src_path.with_suffix(""), cfg)
        else:
            log.info("reusing tokenizer %s", src_path)
        tokenizer = Tokenizer(src_path)
        return tokenizer, tokenizer
    for path, train_file in ((src_path, src_train), (tgt_path, tgt_train)):
        if not path.exists():
            _train_one([train_file], path.with_suffix(""), cfg)
        else:
            log.info("reusing tokenizer %s", path)
    return Tokenizer(src_path), Tokenizer(tgt_path)


def load_tokenizers(run_dir, joint: bool) -> tuple[Tokenizer, Tokenizer]:
    src_path, tgt_path = tokenizer_paths(run_dir, joint)
    for path in {src_path, tgt_path}:
        if not path.is_file():
            raise TransformerMTError(
                f"tokenizer model {path} is missing; the run directory {run_dir} is incomplete "
                f"(was training started there?)"
            )
    src = Tokenizer(src_path)
    return (src, src) if joint else (src, Tokenizer(tgt_path))
