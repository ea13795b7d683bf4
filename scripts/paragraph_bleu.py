#!/usr/bin/env python3
"""What sentence splitting does to BLEU on paragraphs: a test set joined several sentences to a line.

Translates the test set (1) one sentence per line, (2) joined ``--group`` sentences to a line (or a
random 2-4 mix with ``--mix``) with sentence splitting (the default of translate/evaluate) and (3) the
same paragraphs without splitting (``--no-split-sentences``, what the model did before), and scores
each against the references joined the same way (sacreBLEU, the run's target tokenization).

    python scripts/paragraph_bleu.py --model runs/demo --group 3 --limit 300
    python scripts/paragraph_bleu.py --model runs/demo --mix 2 4
    python scripts/paragraph_bleu.py --model runs/m30k_de_en --src data/multi30k/test2016.de \\
        --ref data/multi30k/test2016.en --group 3

Without --src/--ref it takes the run's test split (data.test_prefix). Prints one line per row and,
with --json FILE, writes the numbers.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from transformer_mt import Translator  # noqa: E402
from transformer_mt.data.batches import read_parallel  # noqa: E402
from transformer_mt.scoring import resolve_tokenize, score  # noqa: E402
from transformer_mt.text.segment import sentence_separator  # noqa: E402


def group_sizes(count: int, group: int | None, mix: tuple[int, int] | None, seed: int) -> list[int]:
    """How many sentences each paragraph takes, in order, covering ``count`` sentences."""
    rng = random.Random(seed)
    sizes = []
    while sum(sizes) < count:
        sizes.append(group if group else rng.randint(*mix))
    sizes[-1] -= sum(sizes) - count
    return sizes


def join_groups(lines: list[str], sizes: list[int], separator: str) -> list[str]:
    joined, start = [], 0
    for size in sizes:
        joined.append(separator.join(line.strip() for line in lines[start:start + size]))
        start += size
    return joined


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="run directory of a trained model")
    parser.add_argument("--src", help="source sentences, one per line (default: the run's test split)")
    parser.add_argument("--ref", help="reference translations (default: the run's test split)")
    parser.add_argument("--group", type=int, default=None, help="sentences per paragraph (default: 3)")
    parser.add_argument("--mix", type=int, nargs=2, metavar=("MIN", "MAX"), help="random paragraph sizes in MIN..MAX")
    parser.add_argument("--seed", type=int, default=1, help="seed of --mix (default: 1)")
    parser.add_argument("--limit", type=int, default=None, help="use the first N sentences only")
    parser.add_argument("--beam-size", type=int, default=None, help="default: the run's decoding.beam_size")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", metavar="FILE", help="also write the numbers to FILE")
    args = parser.parse_args()
    if args.group and args.mix:
        parser.error("give --group or --mix, not both")
    group = args.group or (None if args.mix else 3)

    translator = Translator.from_run(args.model, device=args.device)
    data = translator.config.data
    src = args.src or data.path("test", data.src_lang)
    ref = args.ref or data.path("test", data.tgt_lang)
    sources, references = read_parallel(src, ref)
    if args.limit:
        sources, references = sources[:args.limit], references[:args.limit]
    tokenize = resolve_tokenize(translator.config.decoding.sacrebleu_tokenize, data.tgt_lang)
    sizes = group_sizes(len(sources), group, tuple(args.mix) if args.mix else None, args.seed)
    paragraphs = join_groups(sources, sizes, sentence_separator(data.src_lang))
    paragraph_refs = join_groups(references, sizes, sentence_separator(data.tgt_lang))
    shape = f"{group} sentences a line" if group else f"{args.mix[0]}-{args.mix[1]} sentences a line (seed {args.seed})"

    rows = []

    def row(name, hypotheses, refs, seconds):
        result = score(hypotheses, refs, tokenize)
        rows.append({"row": name, "lines": len(hypotheses), "bleu": round(result["bleu"], 2),
                     "chrf": round(result["chrf"], 2), "seconds": round(seconds, 1), "details": result["bleu_details"]})
        print(f"{name:<40} BLEU {result['bleu']:6.2f}  chrF {result['chrf']:6.2f}  ({result['bleu_details']})  "
              f"{seconds:.1f} s", flush=True)

    options = {"beam_size": args.beam_size}
    start = time.perf_counter()
    row("one sentence a line", translator.translate_text(sources, split_sentences=False, **options), references,
        time.perf_counter() - start)
    start = time.perf_counter()
    joined = translator.translate_text(paragraphs, **options)
    row(f"{shape}, split", joined, paragraph_refs, time.perf_counter() - start)
    start = time.perf_counter()
    row(f"{shape}, --no-split-sentences", translator.translate_text(paragraphs, split_sentences=False, **options),
        paragraph_refs, time.perf_counter() - start)
    if args.json:
        Path(args.json).write_text(json.dumps({"model": args.model, "src": str(src), "ref": str(ref),
                                               "sentences": len(sources), "paragraphs": len(paragraphs),
                                               "tokenize": tokenize, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
