#!/usr/bin/env python3
"""What a glossary does to a test set: term use, BLEU and decoding speed without and with it.

The glossary is built the way a terminologist would hand one over, without looking at the model's weights:

1. A word lexicon from the *training* corpus: for each source word, the target word that co-occurs with it
   most often in the same sentence pairs by the Dice coefficient 2 c(s,t) / (c(s) + c(t)), kept when it is at
   least ``--min-dice`` and the source word occurs at least ``--min-count`` times; words of fewer than 3
   letters and the ``--skip-frequent`` most frequent words of each side (articles, prepositions) are left out.
2. Terms that matter on the test set: the lexicon entries whose source word is in a test source, whose target
   word is in that sentence's reference, and whose target word the model's plain translation misses (the
   terms a user would have complained about). Every threshold is fixed before any test number is seen; none
   is tuned on the test set.

Then it translates the test set (beam ``--beam-size``, batches of ``--batch-size``) without the glossary and
with it, and prints BLEU, chrF, term use (the share of applicable entries whose target term is in the
translation) and sentences per second for both (the two timed runs interleaved ``--repeat`` times).

    python scripts/glossary_bleu.py --model runs/m30k_de_en
    python scripts/glossary_bleu.py --model runs/m30k_de_en --write-glossary m30k_terms.tsv --json out.json

Without --src/--ref it takes the run's test split (data.test_prefix), and the run's training files for the
lexicon (data.train_prefix).
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from transformer_mt import Translator  # noqa: E402
from transformer_mt.data.batches import read_parallel  # noqa: E402
from transformer_mt.scoring import resolve_tokenize, score  # noqa: E402
from transformer_mt.text.glossary import Glossary, term_use  # noqa: E402

WORD = re.compile(r"[^\W\d_]{3,}")


def words(line: str) -> set[str]:
    return set(WORD.findall(line.casefold()))


def build_lexicon(sources: list[str], targets: list[str], min_count: int, min_dice: float,
                  skip_frequent: int) -> dict[str, str]:
    """Source word -> its best target word by the Dice coefficient over sentence co-occurrence."""
    source_count, target_count, pair_count = collections.Counter(), collections.Counter(), collections.Counter()
    pairs = [(words(s), words(t)) for s, t in zip(sources, targets)]
    for source_words, target_words in pairs:
        source_count.update(source_words)
        target_count.update(target_words)
    frequent = {w for w, _ in source_count.most_common(skip_frequent)} | \
               {w for w, _ in target_count.most_common(skip_frequent)}
    for source_words, target_words in pairs:
        kept = [t for t in target_words if t not in frequent]
        pair_count.update((s, t) for s in source_words if s not in frequent and source_count[s] >= min_count
                          for t in kept)
    best: dict[str, tuple[float, str]] = {}
    for (s, t), together in pair_count.items():
        dice = 2 * together / (source_count[s] + target_count[t])
        if dice >= min_dice and dice > best.get(s, (0.0, ""))[0]:
            best[s] = (dice, t)
    return {s: t for s, (_, t) in best.items()}


def test_glossary(lexicon: dict[str, str], sources: list[str], references: list[str],
                  plain: list[str]) -> Glossary:
    """The lexicon's entries that the plain translation of some test sentence misses while its reference has
    them (one entry per source word, in the order first met)."""
    chosen: dict[str, str] = {}
    for source, reference, hypothesis in zip(sources, references, plain):
        reference_words, hypothesis_words = words(reference), words(hypothesis)
        for word in sorted(words(source)):
            target = lexicon.get(word)
            if target and target in reference_words and target not in hypothesis_words:
                chosen.setdefault(word, target)
    return Glossary.from_entries([[s, t] for s, t in chosen.items()])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="run directory of a trained model")
    parser.add_argument("--src", help="test sources (default: the run's test split)")
    parser.add_argument("--ref", help="test references (default: the run's test split)")
    parser.add_argument("--train-src", help="training sources for the lexicon (default: the run's train split)")
    parser.add_argument("--train-tgt", help="training targets for the lexicon (default: the run's train split)")
    parser.add_argument("--min-count", type=int, default=5)
    parser.add_argument("--min-dice", type=float, default=0.3)
    parser.add_argument("--skip-frequent", type=int, default=50)
    parser.add_argument("--limit", type=int, default=None, help="use the first N test sentences only")
    parser.add_argument("--beam-size", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=2, help="timed runs of each setting, interleaved")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--write-glossary", metavar="FILE", help="also write the glossary built (TSV)")
    parser.add_argument("--json", metavar="FILE", help="also write the numbers to FILE")
    args = parser.parse_args()

    translator = Translator.from_run(args.model, device=args.device)
    data = translator.config.data
    sources, references = read_parallel(args.src or data.path("test", data.src_lang),
                                        args.ref or data.path("test", data.tgt_lang))
    if args.limit:
        sources, references = sources[:args.limit], references[:args.limit]
    train_sources, train_targets = read_parallel(args.train_src or data.path("train", data.src_lang),
                                                 args.train_tgt or data.path("train", data.tgt_lang))
    lexicon = build_lexicon(train_sources, train_targets, args.min_count, args.min_dice, args.skip_frequent)
    options = {"beam_size": args.beam_size, "batch_size": args.batch_size}
    plain = translator.translate(sources, **options)
    glossary = test_glossary(lexicon, sources, references, plain)
    if args.write_glossary:
        Path(args.write_glossary).write_text("".join(f"{s}\t{t}\n" for s, t in glossary.entries), encoding="utf-8")

    timings: dict[str, list[float]] = {"plain": [], "glossary": []}
    outputs = {"plain": plain}
    for _ in range(max(1, args.repeat)):
        for name, extra in (("plain", {}), ("glossary", {"glossary": glossary})):
            start = time.perf_counter()
            outputs[name] = translator.translate(sources, **options, **extra)
            timings[name].append(time.perf_counter() - start)
    tokenize = resolve_tokenize(translator.config.decoding.sacrebleu_tokenize, data.tgt_lang)
    termless = [i for i, source in enumerate(sources) if not glossary.matches(source)]
    rows = {}
    for name, hyps in outputs.items():
        scores = score(hyps, references, tokenize)
        terms = term_use(glossary, sources, hyps)
        rows[name] = {"bleu": scores["bleu"], "chrf": scores["chrf"], "term_use": terms["term_use"],
                      "terms_used": terms["used"], "terms_applicable": terms["applicable"],
                      "sentences_per_second": len(sources) / min(timings[name]),
                      "unchanged": sum(a == b for a, b in zip(hyps, plain)),
                      # the sentences no entry applies to: what a glossary must leave as it was
                      "unchanged_without_terms": sum(hyps[i] == plain[i] for i in termless),
                      "sentences_without_terms": len(termless)}
    print(f"lexicon: {len(lexicon):,} entries from {len(train_sources):,} training pairs; glossary: {len(glossary)} "
          f"entries, applicable {rows['plain']['terms_applicable']} times in {len(sources)} test sentences")
    print(f"{'':10} {'BLEU':>6} {'chrF':>6} {'term use':>9} {'sent/s':>8} {'same as plain':>14} "
          f"{'same, no term':>14}")
    for name, row in rows.items():
        use = "-" if row["term_use"] is None else f"{row['term_use']:.1f}%"
        print(f"{name:10} {row['bleu']:6.2f} {row['chrf']:6.2f} {use:>9} {row['sentences_per_second']:8.1f} "
              f"{row['unchanged']:>9}/{len(sources)} {row['unchanged_without_terms']:>9}/{len(termless)}")
    if args.json:
        Path(args.json).write_text(json.dumps({"glossary_entries": len(glossary), "lexicon_entries": len(lexicon),
                                               "sentences": len(sources), "beam_size": args.beam_size,
                                               "batch_size": args.batch_size, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
