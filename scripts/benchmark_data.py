#!/usr/bin/env python3
"""Time and memory of preparing large corpora: tokenizer training, encoding, the first training updates.

For each size (pairs), a synthetic parallel corpus is generated once into ``--work-dir``: random
word-like strings from a fixed seed (Zipf-distributed words of invented syllables; the target is
the source's words through a fixed dictionary, in reverse order), no real text. Then three fresh
processes, so that each peak RSS (``ru_maxrss``) belongs to one step of one size:

1. tokenizer: SentencePiece training with the default tokenizer config (joint BPE, 8000 pieces,
   a sample of ``tokenizer.input_sentence_size`` sentences);
2. encode: ``encode_parallel`` into a cache directory (streamed in chunks, memory-mapped);
3. train: open the cache, ``make_batches`` for one epoch, then ``--updates`` training updates of
   a tiny model (the model and loss directly, not the Trainer). Its RSS includes the pages of the
   mapped corpus that batches touched (the kernel maps 64 KB around each page read): page cache
   the kernel may reclaim, shown apart in the last column.

    python scripts/benchmark_data.py                       # 100k, 1M and 4M pairs
    python scripts/benchmark_data.py --sizes 100k,1M --json data_benchmark.json

Prints a markdown table (and with --json writes all numbers to a file).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from transformer_mt.results import cpu_model  # noqa: E402

SEED = 1234
VOCABULARY = 50_000  # distinct words per language
BLOCK = 200_000  # pairs generated at a time


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def rss_now_mb() -> dict:
    """This process's resident memory now, split: anonymous (its own) and file-backed (mapped files, here mostly
    the corpus's pages: page cache the kernel may take back at any time, though counted in RSS)."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return {name: int(fields[f"Rss{name.capitalize()}"].split()[0]) / 1024 for name in ("anon", "file")}


def parse_size(text: str) -> int:
    text = text.strip().lower()
    factor = {"k": 1_000, "m": 1_000_000}.get(text[-1:], 1)
    return int(float(text.rstrip("km")) * factor)


def size_name(pairs: int) -> str:
    if pairs % 1_000_000 == 0:
        return f"{pairs // 1_000_000}M"
    return f"{pairs // 1_000}k" if pairs % 1_000 == 0 else str(pairs)


# The synthetic corpus

def invented_words(rng: np.random.Generator, consonants: str, vowels: str, count: int) -> list[str]:
    """``count`` distinct words of 1-4 consonant-vowel(-consonant) syllables."""
    syllables = [c + v for c in consonants for v in vowels] + [c + v + e for c in consonants for v in vowels
                                                                for e in "nrs"]
    words: dict[str, None] = {}
    while len(words) < count:
        for length in rng.integers(1, 5, size=count):
            words["".join(syllables[i] for i in rng.integers(0, len(syllables), size=length))] = None
    return list(words)[:count]


def write_corpus(folder: Path, pairs: int) -> None:
    """train.src / train.tgt of ``pairs`` lines (same seed: the first lines of every size are the same)."""
    marker = folder / "complete"
    if marker.exists():
        return
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED)
    source_words = np.array(invented_words(rng, "bdfgklmnprstvz", "aeiou", VOCABULARY), dtype=object)
    target_words = np.array(invented_words(rng, "bcdhjkmnpqtwxy", "aeiouy", VOCABULARY), dtype=object)
    frequency = 1.0 / (np.arange(VOCABULARY) + 10.0)  # Zipf-like: a few words are very common
    frequency /= frequency.sum()
    with open(folder / "train.src", "w", encoding="utf-8") as src, open(folder / "train.tgt", "w",
                                                                         encoding="utf-8") as tgt:
        for start in range(0, pairs, BLOCK):
            n = min(BLOCK, pairs - start)
            lengths = np.clip(rng.lognormal(2.4, 0.55, size=n).astype(np.int64), 1, 80)
            words = rng.choice(VOCABULARY, size=int(lengths.sum()), p=frequency)
            ends = np.cumsum(lengths)
            last = np.zeros(len(words), dtype=bool)
            last[ends - 1] = True
            # Each sentence's words backwards: position p of a sentence [s, e) takes word s + e - 1 - p.
            reversed_words = words[np.repeat(ends - lengths + ends - 1, lengths) - np.arange(len(words))]
            period = np.repeat(rng.random(n) < 0.85, lengths) & last  # most sentences end in "."
            for out, vocabulary, order in ((src, source_words, words), (tgt, target_words, reversed_words)):
                tokens = vocabulary[order] + np.where(period, " .", "") + np.where(last, "\n", " ")
                out.write("".join(tokens.tolist()))
    marker.write_text(f"{pairs}\n")


# The three measured steps, each in a process of its own

def step_tokenizer(data: Path, run: Path) -> dict:
    from transformer_mt.config import TokenizerConfig
    from transformer_mt.data.tokenizer import build_tokenizers

    started = time.perf_counter()
    build_tokenizers(run, TokenizerConfig(), data / "train.src", data / "train.tgt")
    return {"seconds": time.perf_counter() - started}


def step_encode(data: Path, run: Path) -> dict:
    from transformer_mt.data.batches import encode_parallel
    from transformer_mt.data.tokenizer import load_tokenizers

    tok, _ = load_tokenizers(run, joint=True)
    started = time.perf_counter()
    corpus = encode_parallel(data / "train.src", data / "train.tgt", tok, tok, max_len=256, cache_dir=run / "cache")
    return {"seconds": time.perf_counter() - started, "pairs": len(corpus),
            "tokens": int(len(corpus.src_ids) + len(corpus.tgt_ids))}


def step_train(data: Path, run: Path, updates: int) -> dict:
    import torch

    from transformer_mt.config import ModelConfig
    from transformer_mt.data.batches import collate, encode_parallel, make_batches
    from transformer_mt.data.tokenizer import PAD_ID, load_tokenizers
    from transformer_mt.device import keep_freed_cpu_memory
    from transformer_mt.model import build_model
    from transformer_mt.training.loss import label_smoothed_nll_loss

    torch.manual_seed(0)
    keep_freed_cpu_memory()  # as the trainer does on CPU
    tok, _ = load_tokenizers(run, joint=True)
    started = time.perf_counter()
    corpus = encode_parallel(data / "train.src", data / "train.tgt", tok, tok, max_len=256, cache_dir=run / "cache")
    opened = time.perf_counter()
    batches = make_batches(corpus, 4096, seed=1, epoch=0)
    batched = time.perf_counter()
    model = build_model(ModelConfig(d_model=64, num_heads=4, num_encoder_layers=2, num_decoder_layers=2,
                                    ffn_dim=256), len(tok), len(tok), PAD_ID)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for indices in batches[:updates]:
        batch = collate(corpus, indices)
        real = batch.tgt_output != PAD_ID
        logits = model(batch.src_tokens, batch.tgt_input, real)
        loss, _ = label_smoothed_nll_loss(logits, batch.tgt_output[real], 0.1, PAD_ID)
        optimizer.zero_grad()
        (loss / batch.num_tokens).backward()
        optimizer.step()
    return {"open_seconds": opened - started, "make_batches_seconds": batched - opened,
            "update_seconds": (time.perf_counter() - batched) / max(1, min(updates, len(batches))),
            "batches": len(batches), "rss_at_end_mb": rss_now_mb()}


def run_child(step: str, data: Path, run: Path, updates: int) -> dict:
    """Run one step in a fresh interpreter; its last stdout line is a JSON result."""
    command = [sys.executable, __file__, "--child", step, "--data", str(data), "--run", str(run),
               "--updates", str(updates)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"{step} failed for {data}:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100k,1M,4M", help="corpus sizes in pairs, e.g. 100k,1M,4M")
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/transformer-mt-data-benchmark"),
                        help="where corpora (kept for later runs) and runs (rebuilt each time) go")
    parser.add_argument("--updates", type=int, default=20, help="training updates measured per size")
    parser.add_argument("--json", type=Path, help="also write the numbers to this file")
    parser.add_argument("--child", choices=("tokenizer", "encode", "train"), help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--run", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        if args.child == "tokenizer":
            result = step_tokenizer(args.data, args.run)
        elif args.child == "encode":
            result = step_encode(args.data, args.run)
        else:
            result = step_train(args.data, args.run, args.updates)
        print(json.dumps({**result, "peak_rss_mb": peak_rss_mb()}))
        return

    import shutil

    rows = []
    for pairs in sorted(parse_size(size) for size in args.sizes.split(",")):
        data = args.work_dir / f"corpus-{size_name(pairs)}"
        started = time.perf_counter()
        write_corpus(data, pairs)
        print(f"{size_name(pairs)}: corpus ready in {data} ({time.perf_counter() - started:.0f} s)", file=sys.stderr)
        run = args.work_dir / f"run-{size_name(pairs)}"
        shutil.rmtree(run, ignore_errors=True)
        run.mkdir(parents=True)
        row = {"pairs": pairs, "text_mb": sum((data / f"train.{s}").stat().st_size for s in ("src", "tgt")) / 2**20}
        for step in ("tokenizer", "encode", "train"):
            row[step] = run_child(step, data, run, args.updates)
            print(f"{size_name(pairs)} {step}: {row[step]}", file=sys.stderr)
        row["cache_mb"] = sum(p.stat().st_size for p in (run / "cache").rglob("*.npy")) / 2**20
        rows.append(row)

    print(f"\nCPU: {cpu_model()}, {len(os.sched_getaffinity(0))} cores available; load average at the end "
          f"{os.getloadavg()[0]:.1f}\n")
    print("| pairs | text MB | tokenizer s | tokenizer RSS MB | encode s | encode RSS MB | pairs/s encoded "
          "| cache MB | open s | make_batches s | s/update | train RSS MB | of which mapped corpus |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        tok, enc, train = row["tokenizer"], row["encode"], row["train"]
        print(f"| {size_name(row['pairs'])} | {row['text_mb']:.0f} | {tok['seconds']:.0f} | {tok['peak_rss_mb']:.0f} "
              f"| {enc['seconds']:.0f} | {enc['peak_rss_mb']:.0f} | {enc['pairs'] / enc['seconds']:,.0f} "
              f"| {row['cache_mb']:.0f} | {train['open_seconds']:.2f} | {train['make_batches_seconds']:.2f} "
              f"| {train['update_seconds']:.2f} | {train['peak_rss_mb']:.0f} | {train['rss_at_end_mb']['file']:.0f} |")
    if args.json:
        args.json.write_text(json.dumps({"cpu": cpu_model(), "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
