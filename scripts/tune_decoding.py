#!/usr/bin/env python3
"""Sweep beam size and length penalty on the validation set of a trained run; report the best.

    python scripts/tune_decoding.py --model runs/m30k_de_en --beams 4 5 8 --length-penalties 0.6 1.0 1.4

Use the winning values with translate/evaluate (--beam-size, --length-penalty) or put them in
the config's decoding section. Tuning on the test set would overstate the result; this reads
only the validation files named in the run's config.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from transformer_mt import TransformerMTError, Translator  # noqa: E402
from transformer_mt.data.batches import read_lines  # noqa: E402
from transformer_mt.device import configure_process  # noqa: E402
from transformer_mt.scoring import resolve_tokenize, score  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="run directory")
    parser.add_argument("--checkpoint", default="best")
    parser.add_argument("--beams", type=int, nargs="+", default=[1, 4, 5, 8])
    parser.add_argument("--length-penalties", type=float, nargs="+", default=[0.6, 0.8, 1.0, 1.2, 1.4])
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    configure_process()  # as the transformer-mt command does
    try:
        translator = Translator.from_run(args.model, args.checkpoint, device=args.device)
        data = translator.config.data
        sources = read_lines(data.path("valid", data.src_lang))
        references = read_lines(data.path("valid", data.tgt_lang))
    except TransformerMTError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    tokenize = resolve_tokenize(translator.config.decoding.sacrebleu_tokenize, data.tgt_lang)
    results = []
    for beam in args.beams:
        for alpha in (args.length_penalties if beam > 1 else [0.0]):
            bleu = score(translator.translate(sources, beam_size=beam, length_penalty=alpha), references, tokenize)["bleu"]
            results.append((bleu, beam, alpha))
            print(f"beam {beam:2d}  length_penalty {alpha:4.2f}  valid BLEU {bleu:6.2f}", flush=True)
    bleu, beam, alpha = max(results)
    print(f"best: --beam-size {beam} --length-penalty {alpha} (valid BLEU {bleu:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
