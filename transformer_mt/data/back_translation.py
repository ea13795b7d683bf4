"""Back-translation: monolingual target-language text -> a synthetic parallel corpus (Sennrich et al. 2016).

    transformer-mt back-translate --model runs/news_en_de --input mono.en --output-prefix data/news.bt

A *reverse* model (trained target -> source) translates each line of the monolingual file; the
result is written as two files, ``PREFIX.<source language>`` (the synthetic sources, the reverse
model's translations) and ``PREFIX.<target language>`` (the monolingual lines as they were), which a
config mixes into training with ``data.train_corpora`` (``{prefix: news.bt, tag: <BT>}``).

Search: beam search by default (the reverse model's decoding.beam_size, 5 unless set). Edunov et
al. 2018 ("Understanding Back-Translation at Scale") found sampled or noised back-translation best
for large corpora, but for small ones (their 80k-pair setting; Multi30k, the 16.5k-pair news
corpus here) beam and greedy back-translation gave better models than sampling. The decoding call
is :func:`synthetic_sources`; ``--top-k``/``--top-p``/``--temperature``/``--seed`` sample instead.

The input is read ``CHUNK_LINES`` lines at a time (each chunk sorted by length and decoded in
batches), so a file of millions of lines never sits in memory; each output is written to a
temporary file and renamed into place when complete (safe_files.write_output), so an
interrupted run leaves no half corpus. Blank lines have nothing to back-translate and are left
out of both files (training would drop such pairs anyway).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

from ..errors import TransformerMTError
from ..safe_files import in_device_folder, output_target, write_output
from .corpus import count_lines, iter_line_chunks

log = logging.getLogger(__name__)

CHUNK_LINES = 20_000


def synthetic_sources(translator, sentences: list[str], beam_size: int | None = None,
                      length_penalty: float | None = None, batch_size: int | None = None, **sampling) -> list[str]:
    """The reverse model's translations of ``sentences`` (None: the reverse model's decoding config);
    ``sampling``: temperature, top_k, top_p, seed, no_repeat_ngram_size, repetition_penalty, as for translate()."""
    return translator.translate(sentences, beam_size=beam_size, length_penalty=length_penalty,
                                batch_size=batch_size, **sampling)


def output_paths(prefix, source_lang: str, target_lang: str) -> tuple[Path, Path]:
    """The synthetic corpus's (source, target) files for an output prefix."""
    return Path(f"{prefix}.{source_lang}"), Path(f"{prefix}.{target_lang}")


def check_output_prefix(prefix) -> None:
    """An output prefix names two new files: not a folder, not a place of devices."""
    text = str(prefix)
    if not text:  # Path("") is the working directory, which the user did not name
        raise TransformerMTError("--output-prefix is empty; give a file name prefix, e.g. bt (which "
                                 "writes bt.<source language> and bt.<target language>)")
    if text.endswith(os.sep) or Path(text).is_dir():
        raise TransformerMTError(f"--output-prefix {text} is a directory; give a file name prefix inside it, e.g. "
                                 f"{Path(text) / 'bt'} (which writes bt.<source language> and bt.<target language>)")
    if in_device_folder(text):
        raise TransformerMTError(f"--output-prefix {text} would create corpus files among the devices of "
                                 f"{os.path.realpath(Path(text).parent)}; choose a prefix in a folder of yours")


def _check_output(path: Path, overwrite: bool, input_path: Path) -> None:
    output_target(path, "--output-prefix")  # a link of another user on the way to it is refused
    if os.path.islink(path):
        raise TransformerMTError(f"{path} is a symbolic link; back-translate never writes through a link (it could "
                                 f"point at any file). Remove it or choose another --output-prefix")
    if not path.parent.is_dir():
        raise TransformerMTError(f"directory {path.parent} of {path} does not exist; create it or choose another "
                                 f"--output-prefix")
    if path.exists():
        if input_path.exists() and path.samefile(input_path):
            raise TransformerMTError(f"{path} is the --input file; choose another --output-prefix")
        if not path.is_file():
            raise TransformerMTError(f"{path} exists and is not a regular file; choose another --output-prefix")
        if not overwrite:
            raise TransformerMTError(f"{path} exists; pass --overwrite to replace it, or choose another "
                                     f"--output-prefix")


def back_translate(translator, input_path, output_prefix, overwrite: bool = False,
                   progress: Callable[[int, int], None] | None = None, **decoding) -> dict:
    """Back-translate the lines of ``input_path`` with ``translator`` (a reverse model) into the two files of
    ``output_prefix``; ``decoding``: beam_size, length_penalty, batch_size and the sampling options of
    translate(). Returns what was written."""
    input_path = Path(input_path)
    data = translator.config.data  # the reverse model's: its source is our target language
    if data.multilingual():  # its files would be named after one pair, its direction chosen by nobody
        raise TransformerMTError(f"back-translate takes a reverse model of one direction; this one translates "
                                 f"{', '.join(f'{s}-{t}' for s, t in data.directions())}")
    check_output_prefix(output_prefix)
    source_out, target_out = output_paths(output_prefix, data.tgt_lang, data.src_lang)
    for path in (source_out, target_out):
        _check_output(path, overwrite, input_path)
    total = count_lines(input_path)
    counts = {"lines": 0, "pairs": 0}

    def write_sources(handle) -> None:
        for index, chunk in enumerate(iter_line_chunks(input_path, CHUNK_LINES)):
            kept = [line.strip() for line in chunk if line.strip()]
            options = dict(decoding)
            if options.get("seed") is not None:  # one seed per chunk: the same seed twice would repeat its draws
                options["seed"] = (options["seed"] + index) % 2**63
            for translation in synthetic_sources(translator, kept, **options):
                handle.write(translation.encode("utf-8") + b"\n")
            counts["lines"] += len(chunk)
            counts["pairs"] += len(kept)
            if progress is not None:
                progress(counts["lines"], total)

    def write_targets(handle) -> None:
        for chunk in iter_line_chunks(input_path, CHUNK_LINES):
            handle.write("".join(line.strip() + "\n" for line in chunk if line.strip()).encode("utf-8"))

    write_output(source_out, write_sources, option="--output-prefix")
    write_output(target_out, write_targets, option="--output-prefix")
    return {"source": str(source_out), "target": str(target_out), "pairs": counts["pairs"],
            "blank_lines": counts["lines"] - counts["pairs"]}
