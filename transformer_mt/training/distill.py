"""Sequence-level knowledge distillation (Kim and Rush 2016): a small, fast student trained on a teacher's
translations.

    transformer-mt distill --teacher runs/m30k_de_en --config configs/multi30k_de_en_student.yaml \\
        --output-dir runs/m30k_student

One command, two phases, each of which an interrupted run continues (run the same command again):

1. **Translation.** The teacher (a run directory) translates the sources of every training corpus of the
   student's config (beam search, beam 5 by default: Kim and Rush's students learned most from the teacher's
   beam output), ``CHUNK_LINES`` lines at a time, each chunk batched and decoded on the cores as
   ``translate`` does (decoding/translator.py). Each chunk is written whole (safe_files.write_run_file: a
   temporary file renamed into place) to ``<output-dir>/distill/``, so a chunk on disk is complete and a
   restarted distill starts at the first chunk that is not; when every chunk of a corpus is there they are
   joined into one target file, line i the translation of source line i. ``distill/manifest.json`` records
   what the translations came from (the teacher's checkpoint and the sources, by SHA-256, and the search):
   a restart with another teacher or corpus is refused rather than mixed in.
2. **Training.** The student config's training corpora become the teacher's translations (same sources, same
   weights and tags) in ``data.train_corpora``, with ``mix_original`` also the original corpora, each with
   its own weight; validation stays on the real references. The student takes the teacher's SentencePiece
   model(s) as given tokenizers (``tokenizer.model`` or ``source_model``/``target_model``; see
   data/tokenizer.py): the same pieces, so that the teacher's outputs are what the student learns to emit, and
   the teacher's shortlist or glossary habits carry over. Then it trains exactly as ``train`` does into the
   same directory: a run that already has a checkpoint resumes from it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path

from ..checkpoint import load_checkpoint
from ..config import Config, config_from_dict
from ..data.corpus import count_lines, iter_line_chunks
from ..data.tokenizer_files import tokenizer_paths
from ..decoding.translator import CHECKPOINT_NAMES, Translator, find_checkpoint, resolve_decoding
from ..errors import TransformerMTError
from ..files import file_sha256
from ..safe_files import make_run_folder, read_regular_file, remove, write_run_file
from .rundir import check_config_continues, claim_run_dir
from .trainer import check_before_run_dir, train

log = logging.getLogger("transformer_mt")

DISTILL_FOLDER = "distill"
MANIFEST = "manifest.json"
CHUNK_LINES = 10_000  # a chunk is decoded in sorted batches: large enough that few batches are ragged
DEFAULT_BEAM_SIZE = 5
MAX_MANIFEST_BYTES = 1 << 20  # a manifest is a few hundred bytes; the bound of every file read whole
MAX_CHUNK_BYTES = 1 << 30  # one chunk's translations, written here (as an --input file's bound)


def distilled_path(folder: Path, corpus: int, tgt_lang: str) -> Path:
    return folder / f"corpus{corpus}.{tgt_lang}"


def chunk_path(folder: Path, corpus: int, chunk: int, tgt_lang: str) -> Path:
    return folder / f"corpus{corpus}.part{chunk:06d}.{tgt_lang}"


def _source_record(path: Path) -> dict:
    digest = hashlib.sha256()
    lines = count_lines(path, digest)
    return {"path": str(path), "sha256": digest.hexdigest(), "lines": lines}


def teacher_tokenizer(config: Config, teacher: Translator, teacher_dir: Path) -> Config:
    """``config`` with the teacher's tokenizer section: its SentencePiece model(s) given, checked."""
    teacher_cfg = teacher.config.tokenizer
    if teacher_cfg.vocabulary != "sentencepiece":
        raise TransformerMTError(f"--teacher {teacher_dir} numbers its pieces with its own id list (an imported model, "
                                 f"'tokenizer.vocabulary: {teacher_cfg.vocabulary}'); distill needs a teacher trained "
                                 f"by transformer-mt, whose tokenizer the student takes")
    given = config.tokenizer.given_models()
    if given or config.training.init_from:
        key = next(iter(given), "training.init_from")
        raise TransformerMTError(f"the student config sets '{key}'; distill gives the student the teacher's tokenizer "
                                 f"and trains it from scratch: leave the tokenizer models and training.init_from empty")
    teacher_data, data = teacher.config.data, config.data
    for which, several in ((f"--teacher {teacher_dir}", teacher_data), ("the student config", data)):
        if several.multilingual():
            directions = ", ".join(f"{s}-{t}" for s, t in several.directions())
            raise TransformerMTError(f"{which} has several directions ({directions}); distill makes a student of "
                                     f"one direction from a teacher of that direction")
    if (teacher_data.src_lang, teacher_data.tgt_lang) != (data.src_lang, data.tgt_lang):
        raise TransformerMTError(f"--teacher {teacher_dir} translates {teacher_data.src_lang} -> {teacher_data.tgt_lang} "
                                 f"but the student config's data is {data.src_lang} -> {data.tgt_lang}; give a teacher "
                                 f"of the student's language pair")
    raw = config.to_dict()
    src, tgt = tokenizer_paths(teacher_dir, teacher_cfg.joint)
    raw["tokenizer"].update(joint=teacher_cfg.joint, vocabulary="sentencepiece", model="", source_model="",
                            target_model="")
    if teacher_cfg.joint:
        raw["tokenizer"]["model"] = str(src)
    else:
        raw["tokenizer"].update(source_model=str(src), target_model=str(tgt))
    return config_from_dict(raw, source="the student config with the teacher's tokenizer")


def student_config(config: Config, distilled: list[Path], mix_original: bool) -> Config:
    """``config`` training on the teacher's translations ``distilled`` (one per training corpus) and, with
    ``mix_original``, on the original corpora too."""
    raw = config.to_dict()
    files = config.data.training_files()
    corpora = [{"src": str(corpus.src), "tgt": str(target), "weight": corpus.weight, "tag": corpus.tag}
               for corpus, target in zip(files, distilled)]
    if mix_original:
        corpora += [{"src": str(corpus.src), "tgt": str(corpus.tgt), "weight": corpus.weight, "tag": corpus.tag}
                    for corpus in files]
    raw["data"]["train_corpora"] = corpora
    return config_from_dict(raw, source="the student config with the teacher's translations")


def translate_corpora(teacher: Translator, sources: list[Path], folder: Path, tgt_lang: str,
                      manifest: dict, chunk_lines: int = CHUNK_LINES,
                      progress: Callable[[int, int, int, int], None] | None = None, **decoding) -> list[Path]:
    """The teacher's translation of each file of ``sources`` into ``folder`` (one file each, line for line), made
    or continued chunk by chunk; ``manifest``: what they come from (compared with the folder's, then written).
    ``progress(corpus, chunks done, chunks, lines translated now)``; ``decoding``: translate()'s options."""
    make_run_folder(folder)
    manifest_path = folder / MANIFEST
    if manifest_path.exists():
        try:
            earlier = json.loads(read_regular_file(manifest_path, MAX_MANIFEST_BYTES).decode("utf-8"))
        except (OSError, ValueError):
            earlier = None
        if earlier != manifest:
            differing = sorted(key for key in manifest if not isinstance(earlier, dict)
                               or earlier.get(key) != manifest[key])
            raise TransformerMTError(
                f"{folder} holds translations of another teacher, corpus or search ({', '.join(differing)} "
                f"differ from this distill's); pass --overwrite to translate again, or use another --output-dir")
    else:
        write_run_file(manifest_path, json.dumps(manifest, indent=1) + "\n")
    outputs = []
    for corpus, (source, record) in enumerate(zip(sources, manifest["sources"])):
        output = distilled_path(folder, corpus, tgt_lang)
        outputs.append(output)
        chunks = max(1, -(-record["lines"] // chunk_lines))
        if output.exists():  # joined; chunks still there were left by a stop before they were removed
            for part in folder.glob(f"corpus{corpus}.part*.{tgt_lang}"):
                remove(part)
            continue
        for chunk, lines in enumerate(iter_line_chunks(source, chunk_lines)):
            path = chunk_path(folder, corpus, chunk, tgt_lang)
            if path.exists() and count_lines(path) == len(lines):  # written whole by an earlier run
                continue  # (one of another length was not: it is translated again)
            translations = teacher.translate(lines, **decoding)
            write_run_file(path, "".join(text + "\n" for text in translations))
            if progress is not None:
                progress(corpus, chunk + 1, chunks, len(lines))
        parts = [chunk_path(folder, corpus, chunk, tgt_lang) for chunk in range(-(-record["lines"] // chunk_lines))]

        def join(handle, parts=parts) -> None:
            for part in parts:
                handle.write(read_regular_file(part, MAX_CHUNK_BYTES))

        write_run_file(output, join)
        if count_lines(output) != record["lines"]:
            for path in (output, *parts):  # so that a rerun translates this corpus anew, not loops on this error
                remove(path)
            raise TransformerMTError(f"the translations of {source} in {folder} have another number of lines than "
                                     f"its {record['lines']}: the source changed while it was translated; its "
                                     f"translations were removed: run distill again to translate it anew")
        for part in parts:
            remove(part)
    return outputs


def distill(teacher_dir, config: Config, output_dir, beam_size: int = DEFAULT_BEAM_SIZE,
            mix_original: bool = False, checkpoint: str = "best", device: str | None = None,
            batch_size: int | None = None, resume: bool = False, overwrite: bool = False,
            chunk_lines: int = CHUNK_LINES, progress: Callable[[int, int, int, int], None] | None = None,
            show_progress: bool | None = None) -> dict:
    """Translate the training sources of ``config`` with the teacher in ``teacher_dir`` and train the student
    described by ``config`` on the translations into ``output_dir`` (see the module's description). ``device``:
    of the teacher and the student (default: the student's training.device); ``batch_size``: the teacher's
    sentences per batch (default: its decoding.batch_size); ``resume``: require an earlier distill in
    ``output_dir`` to continue. Returns train's summary, with ``distilled`` (the translation files) added."""
    teacher_dir, output_dir = Path(teacher_dir), Path(output_dir)
    if output_dir.resolve().is_relative_to(teacher_dir.resolve()) or teacher_dir.resolve().is_relative_to(
            output_dir.resolve()):
        # The student's --overwrite would delete the teacher; its checkpoints would land among the teacher's.
        raise TransformerMTError(f"--output-dir {output_dir} and --teacher {teacher_dir} are one directory or inside "
                                 f"each other; distill into a directory of its own")
    device = device or config.training.device
    teacher = Translator.from_run(teacher_dir, checkpoint=checkpoint, device=device)
    resolve_decoding(teacher.config, beam_size, batch_size=batch_size)  # a bad --beam-size fails now
    config = teacher_tokenizer(config, teacher, teacher_dir)
    # The student's mistakes (no budget, a missing file, a bad device) before hours of translation.
    check_before_run_dir(config, device, False, overwrite)
    if resume and overwrite:
        raise TransformerMTError("--resume continues a distill and --overwrite deletes it: give one of them")
    folder = output_dir / DISTILL_FOLDER
    files = config.data.training_files()
    teacher_checkpoint = find_checkpoint(teacher_dir, checkpoint)
    manifest = {"teacher_checkpoint": str(teacher_checkpoint.resolve()),
                "teacher_sha256": file_sha256(teacher_checkpoint), "beam_size": beam_size,
                "length_penalty": teacher.config.decoding.length_penalty, "chunk_lines": chunk_lines,
                "sources": [_source_record(corpus.src) for corpus in files]}
    lock = claim_run_dir(output_dir, overwrite)  # --overwrite deletes the earlier run, translations included
    try:
        if resume and not (folder / MANIFEST).exists():
            raise TransformerMTError(f"--resume was given but {output_dir} holds no distillation to continue; start "
                                     f"without --resume")
        last = output_dir / CHECKPOINT_NAMES["last"]
        if last.exists():  # a student config the student's checkpoint cannot continue: now, not after translating
            planned = student_config(config, [distilled_path(folder, corpus, config.data.tgt_lang)
                                              for corpus in range(len(files))], mix_original)
            check_config_continues(load_checkpoint(last)["config"], planned, output_dir)
        distilled = translate_corpora(teacher, [corpus.src for corpus in files], folder, config.data.tgt_lang, manifest,
                                      chunk_lines, progress, beam_size=beam_size, batch_size=batch_size)
    finally:
        lock.release()
    del teacher  # its memory is the student's now
    student = student_config(config, distilled, mix_original)
    summary = train(student, output_dir, device=device, show_progress=show_progress)
    return {**summary, "distilled": [str(path) for path in distilled]}
