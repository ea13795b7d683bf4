#!/usr/bin/env python3
"""Reproduce one result: train a config, average checkpoints, decode the test set, write a results row.

    python scripts/reproduce.py configs/multi30k_de_en.yaml
    python scripts/reproduce.py configs/demo.yaml --output-dir runs/demo --results results/results.jsonl
    python scripts/reproduce.py configs/multi30k_de_en.yaml --set training.max_minutes=30   # overrides, if you must

Training resumes if the output directory already holds a run of the same config. The best of
checkpoint_best.pt and checkpoint_average.pt on the validation set is used for the test set.
The row (BLEU, chrF, sacreBLEU signature, parameters, training time, machine) is appended to
--results and printed as a results table row (docs/results.md); a multilingual run gets a row per
direction (named "<config> de-en", ...), its checkpoint chosen by the directions' mean validation BLEU.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from transformer_mt import TransformerMTError, Translator, load_config, train  # noqa: E402
from transformer_mt.config import parse_overrides  # noqa: E402
from transformer_mt.data.batches import read_lines  # noqa: E402
from transformer_mt.device import configure_process  # noqa: E402
from transformer_mt.results import append_results_row, make_results_row, markdown_row  # noqa: E402
from transformer_mt.scoring import resolve_tokenize, score  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config")
    parser.add_argument("--output-dir", help="run directory (default: runs/<config name>)")
    parser.add_argument("--results", default="results/results.jsonl", help="JSON-lines file to append the row to")
    parser.add_argument("--device", default=None)
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a config value, as in 'transformer-mt train --set' (repeatable)")
    args = parser.parse_args()
    try:
        config = load_config(args.config, parse_overrides(args.set))
        configure_process(config.training.num_threads)  # as the transformer-mt command does
        run_dir = Path(args.output_dir or Path("runs") / Path(args.config).stem)
        summary = train(config, run_dir, device=args.device)
        data, dec = config.data, config.decoding
        directions = data.directions()  # one pair, or each direction of a multilingual run
        multilingual = data.multilingual()

        def translate(translator, split, direction):
            source, reference = (read_lines(path) for path in data.split_files(split, direction))
            hyps = translator.translate(source, target_language=direction[1] if multilingual else None)
            return hyps, score(hyps, reference, resolve_tokenize(dec.sacrebleu_tokenize, direction[1]))

        candidates = ["best"] + (["average"] if (run_dir / "checkpoint_average.pt").exists() else [])
        best_name, best_translator, best_bleu = None, None, -1.0
        for name in candidates:  # by validation BLEU (a multilingual run's: the mean of its directions')
            translator = Translator.from_run(run_dir, name, device=args.device or "auto")
            bleu = sum(translate(translator, "valid", d)[1]["bleu"] for d in directions) / len(directions)
            print(f"validation BLEU with checkpoint {name}: {bleu:.2f}")
            if bleu > best_bleu:
                best_name, best_translator, best_bleu = name, translator, bleu
        command = " ".join(["python scripts/reproduce.py", args.config] + [f"--set {item}" for item in args.set])
        rows = []
        for direction in directions:
            hyps, scores = translate(best_translator, "test", direction)
            suffix = f".{direction[0]}-{direction[1]}" if multilingual else ""
            (run_dir / f"test{suffix}.hyp").write_text("".join(h + "\n" for h in hyps), encoding="utf-8")
            rows.append(make_results_row(
                name=Path(args.config).stem + (f" {direction[0]}-{direction[1]}" if multilingual else ""),
                command=command, config_path=args.config, scores=scores, checkpoint=best_name,
                beam_size=dec.beam_size, length_penalty=dec.length_penalty,
                num_parameters=sum(p.numel() for p in best_translator.model.parameters()),
                train_seconds=summary["train_seconds"], steps=summary["step"]))
    except TransformerMTError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for row in rows:
        append_results_row(args.results, row)
        print(f"{row['name']}: test BLEU {row['bleu']:.2f}, chrF {row['chrf']:.2f} ({row['signature']})")
        print(markdown_row(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
