#!/usr/bin/env python3
"""How often an inline HTML tag lands on the right target word, on the demo language pair.

The demo pair (scripts/make_demo_data.py) translates each noun, adjective and verb by a fixed
dictionary, so the right target word of a source word is known. For each test sentence, one such
word (chosen at random) is wrapped in <b>, the sentence is translated with --format html, and the
tag is counted right when the <b> holds exactly the target word that translates it (stem match).

    python scripts/demo_tag_placement.py --model runs/demo [--limit 200] [--alignment-layer 2]
"""

from __future__ import annotations

import argparse
import random
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from make_demo_data import ADJECTIVES, NOUNS, VERBS  # noqa: E402

from transformer_mt import Translator  # noqa: E402
from transformer_mt.data.batches import read_lines  # noqa: E402


def target_stems() -> dict[str, str]:
    """Source word -> the stem its translation starts with."""
    stems = {}
    for noun, (stem, _) in NOUNS.items():
        for form in (noun, noun + "s", "children" if noun == "child" else None,
                     noun[:-2] + "en" if noun in ("man", "woman") else None):
            if form:
                stems[form] = stem
    stems.update(ADJECTIVES)
    for forms, stem in VERBS.items():
        for form in forms:
            stems[form] = stem
    return stems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="run directory of a model trained on the demo data")
    parser.add_argument("--limit", type=int, default=200, help="test sentences to use (default: 200)")
    parser.add_argument("--alignment-layer", type=int, default=None, help="default: the penultimate layer")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    translator = Translator.from_run(args.model, device="cpu")
    data = translator.config.data
    sources = read_lines(data.path("test", data.src_lang))[:args.limit]
    stems = target_stems()
    rng = random.Random(args.seed)
    documents, wanted = [], []
    for sentence in sources:
        words = sentence.split()
        candidates = [i for i, word in enumerate(words) if word.rstrip(".").lower() in stems]
        i = rng.choice(candidates)
        word = words[i].rstrip(".")
        words[i] = f"<b>{word}</b>" + words[i][len(word):]
        documents.append(f"<p>{' '.join(words)}</p>")
        wanted.append(stems[word.lower()])
    outputs = translator.translate_text(documents, format="html", alignment_layer=args.alignment_layer)
    exact = holding = 0
    for output, stem in zip(outputs, wanted):
        inside = " ".join(re.findall(r"<b>(.*?)</b>", output)).lower().split()
        exact += inside == [word for word in inside if word.startswith(stem)][:1] == inside[:1] and len(inside) == 1
        holding += any(word.startswith(stem) for word in inside)
    layer = args.alignment_layer or "penultimate"
    n = len(documents)
    print(f"alignment layer {layer}: <b> on exactly the right target word {exact}/{n} ({100 * exact / n:.1f}%), "
          f"holding it (maybe with others) {holding}/{n} ({100 * holding / n:.1f}%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
