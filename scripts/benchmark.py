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

``--profile N`` says where the time goes, on any CPU or GPU: N more training updates and the beam-5
decoding (batches of 64) of each weights row, timed and then run under torch.profiler; a table of
operators by self time (decoding's worker threads included), and the rate of the floating-point
matrix products beside the rate this machine reaches on a product of their kind alone, on as many
threads (1024 square, and the model's own shape). Products near that rate leave nothing to gain in
them; the rest of the table is what can be had. With bf16 (``--precision bf16``) the products and
the reference product are bf16: what AMX or a GPU's tensor cores give, and what the model gets of it.

Every decoding row also says how many of its translations are identical to the PyTorch fp32
row with the same search and batch size (column ``same``): how much int8, bf16 or another
engine changes the output, beside what it does to BLEU.

    python scripts/benchmark.py --config configs/multi30k_de_en.yaml --run runs/m30k_de_en
    python scripts/benchmark.py --config configs/demo.yaml --json results.json
    python scripts/benchmark.py --config configs/multi30k_de_en.yaml --precision bf16 --profile 10

Prints a table and, with --json, writes all numbers to a file.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

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


def update_batches(trainer: Trainer, updates: int) -> list[list]:
    """The batches of ``updates`` optimizer updates (``accumulate`` each), the training data's first ones."""
    cfg = trainer.config.training
    batches = make_batches(trainer.train_data, cfg.batch_tokens, cfg.seed, 0)
    needed = updates * cfg.accumulate
    batches = (batches * (needed // len(batches) + 1))[:needed]
    return [batches[i:i + cfg.accumulate] for i in range(0, needed, cfg.accumulate)]


def benchmark_training(trainer: Trainer, warmup: int, steps: int) -> dict:
    groups = update_batches(trainer, warmup + steps)
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


# The matrix products an update or a decoding step is made of. The profiler counts the floating-point
# operations of aten's own; oneDNN's linear op (kernels.OneDNNLinear, AMD CPUs with AVX-512) is
# counted from its shapes: x (..., in) times weight (out, in).
MATRIX_PRODUCTS = {"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "mkldnn::_linear_pointwise"}
# --quantize's int8 products (kernels.Int8Linear: fbgemm's layer or oneDNN's): their share of the time is
# shown apart; the profiler sees no weight shape in fbgemm's packed weights, so no rate.
INT8_PRODUCTS = {"quantized::linear_dynamic", "onednn::qlinear_pointwise"}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def event_flops(event) -> int:
    if event.name == "mkldnn::_linear_pointwise":
        x, weight = event.input_shapes[0], event.input_shapes[1]
        return 2 * math.prod(x[:-1]) * weight[0] * weight[1]
    return event.flops or 0


def product_rate(rows: int, inner: int, columns: int, dtype: torch.dtype, device: torch.device) -> float:
    """GFLOP/s of one (rows x inner) by (inner x columns) product on this machine, repeated for ~0.3 s."""
    a = torch.randn(rows, inner, device=device).to(dtype)
    b = torch.randn(inner, columns, device=device).to(dtype)
    for _ in range(3):
        a @ b
    repeats, seconds = 0, 0.0
    while seconds < 0.3:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        for _ in range(10):
            a @ b
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds += time.perf_counter() - start
        repeats += 10
    return 2 * rows * inner * columns * repeats / seconds / 1e9


def concurrent_threads(spans: list[tuple[float, float]]) -> int:
    """The most threads at work at once, from each one's (start, end): decoding makes new threads for every
    call, so counting thread ids over several calls would count too many."""
    edges = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    most = running = 0
    for _, change in edges:  # at equal times an end (-1) sorts first: touching spans do not overlap
        running += change
        most = max(most, running)
    return max(1, most)


def operator_profile(work, repeats: int, device: torch.device, dtype: torch.dtype,
                     shapes: list[tuple[int, int, int]]) -> dict:
    """Where the time of ``work()`` goes: run it ``repeats`` times, then ``repeats`` times more under
    torch.profiler, and sum each operator's self time (nested calls counted once; on CUDA the time of the
    kernels it launched). ``work`` must do the same work each time (training: batches of the same sizes).

    Also how fast its matrix products ran, beside the rate this machine reaches on the same kind of
    product alone (``shapes``: (rows, inner, columns) of a square product and the model's own), so
    what is left to gain in the products shows at once."""
    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    # Decoding runs its batches on threads of its own (Translator): record every thread's operators.
    try:
        all_threads = {"experimental_config": torch._C._profiler._ExperimentalConfig(profile_all_threads=True)}
    except (AttributeError, TypeError):  # a PyTorch without it (an experimental option): the calling thread only
        all_threads = {}
    start = time.perf_counter()  # timed without the profiler first: it adds its own cost to every operator
    for _ in range(repeats):
        work()
    if cuda:
        torch.cuda.synchronize(device)
    wall_us = (time.perf_counter() - start) * 1e6
    start = time.perf_counter()
    with profile(activities=activities, record_shapes=True, with_flops=True, **all_threads) as prof:
        for _ in range(repeats):
            work()
        if cuda:
            torch.cuda.synchronize(device)
    profiled_wall_us = (time.perf_counter() - start) * 1e6
    operators: dict[str, dict] = {}
    thread_us: dict[int, float] = {}
    thread_span: dict[int, tuple[float, float]] = {}  # first operator's start, last one's end
    for event in prof.events():
        if event.device_type != torch.autograd.DeviceType.CPU:
            continue  # a CUDA kernel: its time is in the operator that launched it
        us = event.self_device_time_total if cuda else event.self_cpu_time_total
        thread_us[event.thread] = thread_us.get(event.thread, 0.0) + us
        start_us, end_us = thread_span.get(event.thread, (event.time_range.start, event.time_range.end))
        thread_span[event.thread] = (min(start_us, event.time_range.start), max(end_us, event.time_range.end))
        row = operators.setdefault(event.name, {"operator": event.name, "us": 0.0, "calls": 0, "flops": 0})
        row["us"] += us
        row["calls"] += 1
        row["flops"] += event_flops(event)
    rows = sorted(operators.values(), key=lambda row: -row["us"])
    total_us = sum(row["us"] for row in rows)
    products = [row for row in rows if row["operator"] in MATRIX_PRODUCTS]
    int8_us = sum(row["us"] for row in rows if row["operator"] in INT8_PRODUCTS)
    product_us, product_flops = sum(row["us"] for row in products), sum(row["flops"] for row in products)
    # The threads that did the work (decoding: one per batch decoded side by side), and torch's threads each
    # of them had: the products alone are timed with as many.
    busiest_us = max(thread_us.values(), default=0.0)
    calling = [thread for thread, us in thread_us.items() if us > 0.1 * busiest_us]
    concurrency = concurrent_threads([thread_span[thread] for thread in calling])
    threads = torch.get_num_threads()
    threads_each = max(1, threads // concurrency)
    torch.set_num_threads(threads_each)
    try:
        reachable = {f"{m}x{k} by {k}x{n}": product_rate(m, k, n, dtype, device) for m, k, n in shapes}
    finally:
        torch.set_num_threads(threads)
    return {
        "repeats": repeats, "ms_per_repeat": wall_us / repeats / 1e3,
        "ms_per_repeat_profiled": profiled_wall_us / repeats / 1e3,
        # On CPU, what the operators do not account for of the wall time (under the profiler) of the busiest
        # thread that called them: Python, the loop around them, and the profiler's own bookkeeping.
        "outside_operators_share": None if cuda else max(0.0, 1 - busiest_us / profiled_wall_us),
        "calling_threads": concurrency, "threads_per_calling_thread": threads_each,
        "operators": [{**row, "ms_per_repeat": row["us"] / repeats / 1e3,
                       "share": row["us"] / total_us if total_us else 0.0} for row in rows],
        "int8_products_share": int8_us / total_us if total_us else 0.0,
        "matrix_products": {"share": product_us / total_us if total_us else 0.0,
                            "gflops_per_s": product_flops / product_us / 1e3 if product_us else 0.0,
                            "reachable_gflops_per_s": reachable},
    }


def print_profile(title: str, result: dict, top: int = 15) -> None:
    print(f"\n{title}: {result['ms_per_repeat']:.1f} ms each ({result['ms_per_repeat_profiled']:.1f} under the "
          f"profiler); by operator, self time summed over the threads that called them")
    print(f"  {'operator':58} {'ms each':>8} {'share':>6} {'calls':>6}")
    for row in result["operators"][:top]:
        print(f"  {row['operator'][:58]:58} {row['ms_per_repeat']:8.2f} {row['share']:6.1%} "
              f"{row['calls'] // result['repeats']:6d}")
    if result["outside_operators_share"] is not None:
        print(f"  outside the operators (Python, the loop, the profiler): {result['outside_operators_share']:.1%} "
              f"of the wall time under the profiler "
              f"(busiest of {result['calling_threads']} calling thread(s), "
              f"{result['threads_per_calling_thread']} torch thread(s) each)")
    if result["int8_products_share"]:
        print(f"  int8 matrix products: {result['int8_products_share']:.1%} of the operators' time")
    products = result["matrix_products"]
    reachable = ", ".join(f"{shape} at {rate:.0f}" for shape, rate in products["reachable_gflops_per_s"].items())
    print(f"  floating-point matrix products: {products['share']:.1%} of the operators' time at {products['gflops_per_s']:.0f} "
          f"GFLOP/s; alone, on as many threads, this machine multiplies {reachable} GFLOP/s")


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
    parser.add_argument("--shortlist", action="store_true",
                        help="also decode with --run's lexical shortlist (transformer-mt shortlist --model RUN), "
                             "for each weights row")
    parser.add_argument("--precision", choices=("fp32", "bf16", "fp16"),
                        help="training precision instead of the config's; also adds decoding rows in this "
                             "precision (bf16 pays off on CPUs with AVX-512 BF16 or AMX, and on GPUs)")
    parser.add_argument("--check-exact", type=int, default=0, metavar="N",
                        help="compare fast decoding with uncached one-sentence-at-a-time decoding on the first "
                             "N test sentences (needs --run)")
    parser.add_argument("--ctranslate2", action="store_true",
                        help="also decode with the run exported to CTranslate2, float32 and int8 (needs --run)")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="after the timed runs, profile N training updates and the beam-5 decoding (batches "
                             "of 64) of the test sentences by operator: where the time goes, and how fast the "
                             "matrix products ran against what this machine reaches on them alone")
    parser.add_argument("--json", help="write the results to this file")
    args = parser.parse_args()

    if args.ctranslate2 and not args.run:
        parser.error("--ctranslate2 needs a trained run (--run DIR)")
    if args.profile < 0:
        parser.error(f"--profile takes a number of updates, 0 or more, not {args.profile}")
    config = load_config(args.config)
    configure_process(config.training.num_threads)  # as the transformer-mt command does
    if args.precision:
        config.training.precision = args.precision
    result = {"config": args.config, "machine": {"platform": platform.platform(), "processor": platform.processor(),
                                                  "torch": torch.__version__, "threads": torch.get_num_threads(),
                                                  "cpu_capability": torch.backends.cpu.get_cpu_capability()}}
    trainer = model_after_timing = None
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
            if args.profile and not args.skip_training:
                # Without --run, decoding uses the model as the timed updates left it, whether profiled or not.
                model_after_timing = copy.deepcopy(trainer.model)
                groups = update_batches(trainer, args.profile) * 2  # the same updates timed, then profiled
                model_cfg = config.model
                result["training_profile"] = operator_profile(
                    lambda: trainer.train_update([collate(trainer.train_data, idx) for idx in groups.pop(0)]),
                    args.profile, trainer.device, DTYPES[trainer.precision],
                    [(1024, 1024, 1024), (config.training.batch_tokens, model_cfg.d_model, model_cfg.ffn_dim)])
                print_profile(f"{args.profile} training updates ({trainer.precision})", result["training_profile"])
    if not args.skip_decoding:
        data = config.data
        sources = read_lines(data.path("test", data.src_lang))[:args.sentences]
        references = read_lines(data.path("test", data.tgt_lang))[:args.sentences]
        tokenize = resolve_tokenize(config.decoding.sacrebleu_tokenize, data.tgt_lang)
        variants = [("fp32", "fp32", False, False)]
        if args.precision and args.precision != "fp32":
            variants.append((args.precision, args.precision, False, False))
        if args.quantize:
            variants.append(("int8", "fp32", True, False))
        if args.shortlist:
            if not args.run:
                parser.error("--shortlist decodes with a trained run's shortlist: give --run DIR")
            variants += [(f"{name}+sl", precision, quantize, True) for name, precision, quantize, _ in variants]
        result["decoding"] = []
        profiles = []  # printed after the speed table
        for name, precision, quantize, shortlist in variants:
            if args.run:
                translator = Translator.from_run(args.run, args.checkpoint, device=args.device or "auto",
                                                 precision=precision, quantize=quantize, shortlist=shortlist)
            else:
                model = model_after_timing if model_after_timing is not None else trainer.model
                if quantize:
                    model = quantize_linear_layers(copy.deepcopy(model))
                translator = Translator(model, trainer.src_tok, trainer.tgt_tok, config, trainer.device, precision)
            for row in benchmark_decoding(translator, sources, references, tokenize):
                row["weights"] = name
                result["decoding"].append(row)
            if args.profile:
                model_cfg = translator.model.cfg
                vocabulary = translator.model.generator.out_features
                profiled = operator_profile(
                    lambda translator=translator: translator.translate(sources, beam_size=5, batch_size=64), 1,
                    translator.device,
                    DTYPES[precision], [(1024, 1024, 1024), (320, model_cfg.d_model, vocabulary)])
                result.setdefault("decoding_profiles", {})[name] = profiled
                profiles.append((f"beam-5 decoding of {len(sources)} sentences, batches of 64 ({name})", profiled))
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
        for title, profiled in profiles:
            print_profile(title, profiled)
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
