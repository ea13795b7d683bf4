#!/usr/bin/env python3
"""Training throughput with 1 and N data-parallel processes (torchrun), on a config's data.

    python scripts/benchmark_distributed.py --config configs/multi30k_de_en.yaml --nproc 2
    python scripts/benchmark_distributed.py --config configs/wmt14_en_de.yaml --nproc 8 --device cuda

Each setting trains a fresh run for --warmup-steps + --steps updates (no validation until the
end) and reports the target tokens per second of all processes together over the last --steps
updates, read from rank 0's metrics.jsonl, and the ratio to 1 process. Every process gets
cores / N CPU threads. On a CPU the N processes share the same cores, so expect no speed-up
there: what this measures on a CPU is the cost of the gradient exchange. On GPUs each process
has its own GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from transformer_mt.results import cpu_model  # noqa: E402


def train_command(config: str, run_dir: Path, nproc: int, steps: int, device: str | None,
                  overrides: list[str]) -> list[str]:
    launcher = [sys.executable, "-m", "transformer_mt"] if nproc == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "-m",
        "transformer_mt"]
    settings = [f"training.max_steps={steps}", f"training.validate_every={steps}", "training.log_every=1",
                "training.max_minutes=0", "training.average_last_n=0", "training.patience=0", *overrides]
    command = launcher + ["train", "--config", config, "--output-dir", str(run_dir)]
    for setting in settings:
        command += ["--set", setting]
    return command + (["--device", device] if device else [])


def tokens_per_second(run_dir: Path, warmup: int) -> float:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    timed = [r for r in records if r["type"] == "train" and r["step"] > warmup]
    # log_every=1: each record is one update, its "tokens" those of all ranks.
    total_tokens = sum(r["tokens"] for r in timed)
    return total_tokens / sum(r["tokens"] / r["tokens_per_s"] for r in timed)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True)
    parser.add_argument("--nproc", type=int, nargs="+", default=[2], help="process counts to compare with 1")
    parser.add_argument("--warmup-steps", type=int, default=10)
    parser.add_argument("--steps", type=int, default=40, help="timed updates (default: 40)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: the config's)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="config override for every setting (repeatable), e.g. training.precision=bf16")
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    rows = []
    with tempfile.TemporaryDirectory(prefix="benchmark-distributed-") as tmp:
        for nproc in [1] + [n for n in args.nproc if n != 1]:
            run_dir = Path(tmp) / f"nproc{nproc}"
            env = dict(os.environ, OMP_NUM_THREADS=str(max(1, cores // nproc)))
            command = train_command(args.config, run_dir, nproc, args.warmup_steps + args.steps, args.device,
                                    args.set)
            result = subprocess.run(command, env=env, capture_output=True, text=True)
            if result.returncode != 0:
                print(result.stderr[-3000:], file=sys.stderr)
                print(f"error: training with {nproc} process(es) failed (exit status {result.returncode})",
                      file=sys.stderr)
                return 1
            rows.append((nproc, tokens_per_second(run_dir, args.warmup_steps)))
    base = rows[0][1]
    print(f"machine: {cpu_model()}, {cores} cores, torch {torch.__version__}, "
          f"cuda devices: {torch.cuda.device_count()}")
    print(f"config: {args.config} {' '.join('--set ' + s for s in args.set)}; {args.steps} timed updates after "
          f"{args.warmup_steps}")
    print("| processes | threads each | target tokens/s (all processes) | vs 1 process |")
    print("|---:|---:|---:|---:|")
    for nproc, rate in rows:
        print(f"| {nproc} | {max(1, cores // nproc)} | {rate:,.0f} | {rate / base:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
