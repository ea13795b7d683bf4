"""Result rows: one record per trained-and-scored model, appended to a JSON-lines file.

A row says what was measured (corpus, direction, BLEU, chrF and the sacreBLEU signature),
how (command, config, checkpoint, beam settings, parameters) and where and how long
(machine, training wall-clock time), so the results table (README, docs/results.md) can be traced to runs.
"""

from __future__ import annotations

import json
import os
import platform
from datetime import datetime, timezone
from pathlib import Path

import torch

from .device import cpu_info


def cpu_model() -> str:
    """The CPU's model name as /proc/cpuinfo gives it (what lscpu shows), else what platform knows."""
    return cpu_info("model name") or platform.processor() or platform.machine()


def machine_description() -> str:
    cpu = cpu_model()
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    return f"{cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} threads{gpu}, torch {torch.__version__}"


def make_results_row(*, name: str, command: str, config_path: str, scores: dict, checkpoint: str,
                     beam_size: int, length_penalty: float, num_parameters: int, train_seconds: float,
                     steps: int, machine: str | None = None) -> dict:
    return {
        "name": name,
        "bleu": round(float(scores["bleu"]), 2),
        "chrf": round(float(scores["chrf"]), 2),
        "signature": scores["signature"],
        "command": command,
        "config": config_path,
        "checkpoint": checkpoint,
        "beam_size": beam_size,
        "length_penalty": length_penalty,
        "parameters": num_parameters,
        "train_minutes": round(train_seconds / 60, 1),
        "steps": steps,
        "machine": machine or machine_description(),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
    }


def append_results_row(path, row: dict) -> None:
    from .safe_files import make_folders, open_run_file

    path = Path(path)
    make_folders(path.parent)
    with open_run_file(path, "a") as handle:  # by descriptor, never through a link planted under its name
        handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def markdown_row(row: dict) -> str:
    return (f"| {row['name']} | {row['bleu']:.2f} | {row['chrf']:.2f} | {row['train_minutes']} min, {row['steps']} "
            f"updates | `{row['command']}` | {row['machine']} |")
