"""BLEU of documents against the same sentences translated one per line: does a document's structure cost
translation quality?

    python scripts/benchmark_documents.py --model runs/m30k_de_en --src ../shared/data/multi30k/test2016.de \
        --ref ../shared/data/multi30k/test2016.en

From the test sentences it builds, with a seeded random generator, documents as people write them, and
translates each through ``Translator.translate_document`` (what ``transformer-mt translate-file`` and the
server's /translate_file do):

- txt: paragraphs of 2-6 sentences hard-wrapped at a width drawn per paragraph (30-100 characters);
- srt: one cue per sentence broken over two lines, and every fifth sentence cut over two cues at a word
  boundary;
- docx: paragraphs of 2-5 sentences, a phrase of 1-3 words of each sentence bold, italic or a link.

Each document's text is scored at the level where its units are known (txt and docx: paragraphs, the
references of a paragraph joined; srt: sentences, a sentence's cues joined) against the per-line
translations grouped the same way, so the two BLEU figures of a row differ by what the document did and
nothing else. Prints one row per format; --json writes them.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import sys
import textwrap
import time
from pathlib import Path

import sacrebleu

from transformer_mt.decoding.translator import Translator
from transformer_mt.text.documents import balanced_lines


def paragraphs_of(count: int, rng: random.Random, low: int, high: int) -> list[range]:
    groups, start = [], 0
    while start < count:
        stop = min(count, start + rng.randint(low, high))
        groups.append(range(start, stop))
        start = stop
    return groups


def wrapped_text(sources: list[str], groups: list[range], rng: random.Random) -> bytes:
    return "\n\n".join(textwrap.fill(" ".join(sources[k] for k in group), rng.randint(30, 100), break_long_words=False,
                                     break_on_hyphens=False) for group in groups).encode() + b"\n"


def read_paragraph_texts(data: bytes) -> list[str]:
    return [" ".join(block.split()) for block in data.decode().split("\n\n") if block.strip()]


def subtitles(sources: list[str], rng: random.Random) -> tuple[bytes, list[range]]:
    """An .srt: a cue (two lines) per sentence, every fifth sentence over two cues; and each sentence's cues."""
    cues, owners = [], []
    for sentence in sources:
        words = sentence.split()
        if len(cues) % 5 == 4 and len(words) >= 6:
            cut = rng.randint(2, len(words) - 2)
            parts = [" ".join(words[:cut]), " ".join(words[cut:])]
        else:
            parts = [sentence]
        first = len(cues)
        cues += parts
        owners.append(range(first, len(cues)))
    blocks = []
    for number, text in enumerate(cues, 1):
        start, end = number * 3, number * 3 + 2
        blocks.append(f"{number}\n00:{start // 60:02d}:{start % 60:02d},000 --> 00:{end // 60:02d}:{end % 60:02d},500\n"
                      + "\n".join(balanced_lines(text, 2)) + "\n")
    return "\n".join(blocks).encode(), owners


def read_cues(data: bytes) -> list[str]:
    import srt

    return [" ".join(cue.content.split()) for cue in srt.parse(data.decode())]


def word_document(sources: list[str], groups: list[range], rng: random.Random) -> bytes:
    import docx
    from docx.oxml.shared import OxmlElement, qn

    document = docx.Document()
    relation = document.part.relate_to("https://example.org/",
                                       "http://schemas.openxmlformats.org/officeDocument/2006/relationships/hyperlink",
                                       is_external=True)
    for group in groups:
        paragraph = document.add_paragraph()
        for n, k in enumerate(group):
            words = sources[k].split()
            size = min(len(words), rng.randint(1, 3))
            first = rng.randint(0, len(words) - size)
            before = " ".join(words[:first]) + (" " if first else "")
            phrase = " ".join(words[first:first + size])
            after = (" " if first + size < len(words) else "") + " ".join(words[first + size:])
            paragraph.add_run((" " if n else "") + before)
            kind = rng.choice(("bold", "italic", "link"))
            if kind == "link":
                link = OxmlElement("w:hyperlink")
                link.set(qn("r:id"), relation)
                run = OxmlElement("w:r")
                text = OxmlElement("w:t")
                text.set(qn("xml:space"), "preserve")
                text.text = phrase
                run.append(text)
                link.append(run)
                paragraph._p.append(link)
            else:
                setattr(paragraph.add_run(phrase), kind, True)
            paragraph.add_run(after)
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def read_word_paragraphs(data: bytes) -> tuple[list[str], int]:
    """The paragraphs' texts (links included) and the number of formatted stretches (bold, italic, link)."""
    import docx
    from docx.oxml.ns import qn

    document = docx.Document(io.BytesIO(data))
    texts, formatted = [], 0
    for paragraph in document.paragraphs:
        texts.append(" ".join("".join(t.text or "" for t in paragraph._p.iter(qn("w:t"))).split()))
        formatted += len(paragraph._p.findall(qn("w:hyperlink")))
        formatted += sum(1 for run in paragraph.runs if run.bold or run.italic)
    return texts, formatted


def bleu(hypotheses: list[str], references: list[str]) -> float:
    return sacrebleu.corpus_bleu(hypotheses, [references]).score


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="run directory")
    parser.add_argument("--src", required=True, help="source sentences, one per line")
    parser.add_argument("--ref", required=True, help="reference translations, one per line")
    parser.add_argument("--limit", type=int, default=0, help="use the first N sentences (0: all)")
    parser.add_argument("--formats", default="txt,srt,docx", help="comma-separated: txt, srt, docx")
    parser.add_argument("--beam-size", type=int, default=None, help="(default: the run's decoding.beam_size)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", help="write the rows here as JSON")
    args = parser.parse_args(argv)
    sources = open(args.src, encoding="utf-8").read().splitlines()
    references = open(args.ref, encoding="utf-8").read().splitlines()
    if args.limit:
        sources, references = sources[:args.limit], references[:args.limit]
    translator = Translator.from_run(args.model)
    options = {"beam_size": args.beam_size} if args.beam_size else {}
    per_line = translator.translate(sources, **options)
    rng = random.Random(args.seed)
    rows = []
    for name in args.formats.split(","):
        started = time.perf_counter()
        if name == "txt":
            groups = paragraphs_of(len(sources), rng, 2, 6)
            got = read_paragraph_texts(translator.translate_document(wrapped_text(sources, groups, rng), "a.txt",
                                                                     **options))
            units, extra = groups, ""
        elif name == "srt":
            data, owners = subtitles(sources, rng)
            cues = read_cues(translator.translate_document(data, "a.srt", **options))
            got = [" ".join(cues[k] for k in owner) for owner in owners]
            units = [range(k, k + 1) for k in range(len(sources))]
            extra = f"{sum(len(owner) > 1 for owner in owners)} sentences over two cues"
        elif name == "docx":
            units = paragraphs_of(len(sources), rng, 2, 5)
            got, formatted = read_word_paragraphs(translator.translate_document(word_document(sources, units, rng),
                                                                                "a.docx", **options))
            extra = f"{formatted} formatted stretches for {len(sources)} formatted phrases"
        else:
            parser.error(f"unknown format {name!r}; use txt, srt or docx")
        seconds = time.perf_counter() - started
        if len(got) != len(units):
            print(f"{name}: {len(got)} units came back for {len(units)}", file=sys.stderr)
            return 1
        reference = [" ".join(references[k] for k in unit) for unit in units]
        lines = [" ".join(per_line[k] for k in unit) for unit in units]
        row = {"format": name, "units": len(units), "document_bleu": round(bleu(got, reference), 2),
               "per_line_bleu": round(bleu(lines, reference), 2), "seconds": round(seconds, 1), "note": extra}
        rows.append(row)
        print(f"{name:5s} {row['units']:5d} units  document BLEU {row['document_bleu']:6.2f}  one per line "
              f"{row['per_line_bleu']:6.2f}  ({row['seconds']} s{'; ' + extra if extra else ''})")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
