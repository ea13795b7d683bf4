#!/usr/bin/env python3
"""Measure training and decoding speed of transformer-mt on a config's data.

Training: target tokens per second over ``--train-steps`` optimizer updates, measured after
``--warmup-steps`` updates, with the config's batch size, precision and threads; peak memory.
Decoding: sentences and target tokens per second on the first ``--sentences`` test sentences,
greedy and beam 5, batch sizes 1 and 64, and the BLEU of each setting.

Decoding uses a trained run (``--run DIR``); without one it decodes with the model after the
timed training updates (speeds are then indicative only, BLEU meaningless).

``--check-exact N`` checks that speed costs no BLEU: it decodes the first N test sentences the
fast way (key/value cache, 64 sentences per batch, finished sentences leaving the batch) and the
reference way (no cache, the whole prefix recomputed each step, one sentence at a time), greedy
and beam 5, and prints how many translations are identical and both BLEU scores.

``--ctranslate2`` (with ``--run``) also exports the run to CTranslate2 in float32 and int8 and
decodes the same sentences with the same settings (rows ``ct2 fp32`` and ``ct2 int8``).

Every decoding row also says how many of its translations are identical to the PyTorch fp32
row with the same search and batch size (column ``same``): how much int8, bf16 or another
engine changes the output, beside what it does to BLEU.

    python scripts/benchmark.py --config configs/multi30k_de_en.yaml --run runs/m30k_de_en
    python scripts/benchmark.py --config configs/demo.yaml --json results.json

Prints a table and, with --json, writes all numbers to a file.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from transformer_mt.config import load_config  # noqa: E402
from transformer_mt.data.batches import collate, make_batches, read_lines  # noqa: E402
from transformer_mt.decoding.translator import Translator  # noqa: E402
from transformer_mt.device import configure_process  # noqa: E402
from transformer_mt.interop.ct2_translator import CTranslate2Translator  # noqa: E402
from transformer_mt.interop.ctranslate2_export import INSTALL_HINT, export_ctranslate2  # noqa: E402
from transformer_mt.kernels import quantize_linear_layers  # noqa: E402
from transformer_mt.scoring import resolve_tokenize, score  # noqa: E402
from transformer_mt.training.trainer import Trainer  # noqa: E402


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def benchmark_training(trainer: Trainer, warmup: int, steps: int) -> dict:
    cfg = trainer.config.training
    batches = make_batches(trainer.train_data, cfg.batch_tokens, cfg.seed, 0)
    needed = (warmup + steps) * cfg.accumulate
    batches = (batches * (needed // len(batches) + 1))[:needed]
    groups = [batches[i:i + cfg.accumulate] for i in range(0, needed, cfg.accumulate)]
    for group in groups[:warmup]:
        trainer.train_update([collate(trainer.train_data, idx) for idx in group])
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()
    tokens = 0
    start = time.perf_counter()
    for group in groups[warmup:]:
        stats = trainer.train_update([collate(trainer.train_data, idx) for idx in group])
        tokens += stats["tokens"] if stats else 0
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return {"updates": steps, "target_tokens": tokens, "seconds": seconds, "target_tokens_per_s": tokens / seconds,
            "peak_memory_mb": peak_memory_mb(trainer.device)}


def benchmark_decoding(translator: Translator | CTranslate2Translator, sources: list[str], references: list[str],
                       tokenize: str) -> list[dict]:
    rows = []
    for beam_size in (1, 5):
        for batch_size in (1, 64):
            translator.translate(sources[:8], beam_size=beam_size, batch_size=batch_size)  # warm-up
            start = time.perf_counter()
            hyps = translator.translate(sources, beam_size=beam_size, batch_size=batch_size)
            seconds = time.perf_counter() - start
            out_tokens = sum(len(ids) + 1 for ids in translator.tgt_tokenizer.encode(hyps))
            rows.append({"search": "greedy" if beam_size == 1 else f"beam{beam_size}", "batch_size": batch_size,
                         "sentences": len(sources), "seconds": seconds,
                         "sentences_per_s": len(sources) / seconds, "tokens_per_s": out_tokens / seconds,
                         "bleu": score(hyps, references, tokenize)["bleu"], "hypotheses": hyps})
    return rows


def benchmark_ctranslate2(run: str, checkpoint: str, sources: list[str], references: list[str],
                          tokenize: str) -> list[dict]:
    """benchmark_decoding's rows for the run exported to CTranslate2 in float32 and int8; none without it."""
    try:
        import ctranslate2  # noqa: F401
    except ImportError:
        print(f"CTranslate2 is not installed, skipping the ct2 rows: {INSTALL_HINT}")
        return []
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, quantization in (("fp32", None), ("int8", "int8")):
            export_dir = export_ctranslate2(run, Path(tmp) / name, checkpoint, quantization=quantization)
            translator = CTranslate2Translator(export_dir, intra_threads=torch.get_num_threads())
            rows += [{**row, "weights": f"ct2 {name}"}
                     for row in benchmark_decoding(translator, sources, references, tokenize)]
    return rows


def check_exact(translator: Translator, sources: list[str], references: list[str], tokenize: str) -> list[dict]:
    rows = []
    for beam_size in (1, 5):
        fast = translator.translate(sources, beam_size=beam_size, batch_size=64)
        start = time.perf_counter()
        reference = translator.translate(sources, beam_size=beam_size, batch_size=1, incremental=False)
        rows.append({"search": "greedy" if beam_size == 1 else f"beam{beam_size}", "sentences": len(sources),
                     "identical": sum(a == b for a, b in zip(fast, reference)),
                     "bleu_fast": score(fast, references, tokenize)["bleu"],
                     "bleu_reference": score(reference, references, tokenize)["bleu"],
                     "reference_seconds": time.perf_counter() - start})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="YAML config (data, model size, batch size, precision)")
    parser.add_argument("--run", help="trained run directory to decode with")
    parser.add_argument("--checkpoint", default="best", help="checkpoint of --run (default: best)")
    parser.add_argument("--device", default=None, help="auto, cpu, cuda (default: the config's)")
    parser.add_argument("--warmup-steps", type=int, default=5)
    parser.add_argument("--train-steps", type=int, default=20)
    parser.add_argument("--sentences", type=int, default=1000, help="test sentences to decode (default: 1000)")
    parser.add_argument("--skip-training", action="store_true")
    parser.add_argument("--skip-decoding", action="store_true")
    parser.add_argument("--quantize", action="store_true", help="also decode with int8 dynamic quantization")
    parser.add_argument("--precision", choices=("fp32", "bf16", "fp16"),
                        help="training precision instead of the config's; also adds decoding rows in this "
                             "precision (bf16 pays off on CPUs with AVX-512 BF16 or AMX, and on GPUs)")
    parser.add_argument("--check-exact", type=int, default=0, metavar="N",
                        help="compare fast decoding with uncached one-sentence-at-a-time decoding on the first "
                             "N test sentences (needs --run)")
    parser.add_argument("--ctranslate2", action="store_true",
                        help="also decode with the run exported to CTranslate2, float32 and int8 (needs --run)")
    parser.add_argument("--json", help="write the results to this file")
    args = parser.parse_args()

    if args.ctranslate2 and not args.run:
        parser.error("--ctranslate2 needs a trained run (--run DIR)")
    config = load_config(args.config)
    configure_process(config.training.num_threads)  # as the transformer-mt command does
    if args.precision:
        config.training.precision = args.precision
    result = {"config": args.config, "machine": {"platform": platform.platform(), "processor": platform.processor(),
                                                  "torch": torch.__version__, "threads": torch.get_num_threads(),
                                                  "cpu_capability": torch.backends.cpu.get_cpu_capability()}}
    trainer = None
    if not args.skip_training or not args.run:
        with tempfile.TemporaryDirectory() as tmp:
            trainer = Trainer(config, Path(tmp) / "run", device=args.device, show_progress=False)
            result["machine"]["threads"] = torch.get_num_threads()
            if not args.skip_training:
                result["training"] = benchmark_training(trainer, args.warmup_steps, args.train_steps)
                t = result["training"]
                print(f"training: {t['target_tokens_per_s']:.0f} target tokens/s over {t['updates']} updates "
                      f"({t['seconds']:.1f}s), peak memory {t['peak_memory_mb']:.0f} MB, "
                      f"device {trainer.device}, precision {config.training.precision}, "
                      f"{result['machine']['threads']} threads")
    if not args.skip_decoding:
        data = config.data
        sources = read_lines(data.path("test", data.src_lang))[:args.sentences]
        references = read_lines(data.path("test", data.tgt_lang))[:args.sentences]
        tokenize = resolve_tokenize(config.decoding.sacrebleu_tokenize, data.tgt_lang)
        variants = [("fp32", "fp32", False)]
        if args.precision and args.precision != "fp32":
            variants.append((args.precision, args.precision, False))
        if args.quantize:
            variants.append(("int8", "fp32", True))
        result["decoding"] = []
        for name, precision, quantize in variants:
            if args.run:
                translator = Translator.from_run(args.run, args.checkpoint, device=args.device or "auto",
                                                 precision=precision, quantize=quantize)
            else:
                model = trainer.model
                if quantize:
                    model = quantize_linear_layers(copy.deepcopy(model))
                translator = Translator(model, trainer.src_tok, trainer.tgt_tok, config, trainer.device, precision)
            for row in benchmark_decoding(translator, sources, references, tokenize):
                row["weights"] = name
                result["decoding"].append(row)
        if args.ctranslate2:
            result["decoding"] += benchmark_ctranslate2(args.run, args.checkpoint, sources, references, tokenize)
        fp32 = {(row["search"], row["batch_size"]): row["hypotheses"] for row in result["decoding"]
                if row["weights"] == "fp32"}
        for row in result["decoding"]:
            hyps = row.pop("hypotheses")
            row["identical_to_fp32"] = sum(a == b for a, b in zip(hyps, fp32[row["search"], row["batch_size"]]))
        print(f"\n{'weights':8} {'search':8} {'batch':>5} {'sent/s':>8} {'tok/s':>8} {'BLEU':>6} {'same':>11}")
        for row in result["decoding"]:
            print(f"{row['weights']:8} {row['search']:8} {row['batch_size']:5d} {row['sentences_per_s']:8.1f} "
                  f"{row['tokens_per_s']:8.0f} {row['bleu']:6.2f} {row['identical_to_fp32']:5d}/{row['sentences']:<5d}")
    if args.check_exact:
        if not args.run:
            parser.error("--check-exact needs a trained run (--run DIR)")
        data = config.data
        sources = read_lines(data.path("test", data.src_lang))[:args.check_exact]
        references = read_lines(data.path("test", data.tgt_lang))[:args.check_exact]
        tokenize = resolve_tokenize(config.decoding.sacrebleu_tokenize, data.tgt_lang)
        translator = Translator.from_run(args.run, args.checkpoint, device=args.device or "auto")
        result["check_exact"] = check_exact(translator, sources, references, tokenize)
        print(f"\n{'search':8} {'identical':>12} {'BLEU fast':>10} {'BLEU ref':>10}")
        for row in result["check_exact"]:
            print(f"{row['search']:8} {row['identical']:5d}/{row['sentences']:<6d} {row['bleu_fast']:10.2f} "
                  f"{row['bleu_reference']:10.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
