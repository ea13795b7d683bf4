"""Pictures of runs: learning curves from ``metrics.jsonl`` (optional extra [plots]: matplotlib).

    from transformer_mt.plotting import plot_learning_curves
    plot_learning_curves(["runs/a", "runs/b"], "plots/")   # -> plots/learning_curves.png

One figure with four panels, steps on x: training and validation loss (nats per target token),
validation BLEU and chrF, learning rate, and training speed (target tokens/s). Several runs are
overlaid in one colour each, which is how recipes are compared. Matplotlib's Agg backend draws
without a display.
"""

from __future__ import annotations

import json
from pathlib import Path

from .errors import TransformerMTError

FORMATS = ("png", "svg", "pdf")


def read_metrics(run_dir) -> list[dict]:
    """The records of a run's metrics.jsonl (a half-written last line, as a kill leaves it, is skipped)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise TransformerMTError(f"{path} does not exist; --model must be a run directory that has trained")
    records = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int):
            records.append(record)
    if not records:
        raise TransformerMTError(f"{path} holds no training records yet")
    return records


def _series(records: list[dict], kind: str, key: str) -> tuple[list[int], list[float]]:
    points = [(r["step"], r[key]) for r in records if r.get("type") == kind and isinstance(r.get(key), (int, float))]
    return [p[0] for p in points], [p[1] for p in points]


def plot_learning_curves(run_dirs: list, output_dir, formats: tuple[str, ...] = ("png",)) -> list[Path]:
    """Draw the learning curves of one or more runs; return the files written."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise TransformerMTError("plotting needs matplotlib: pip install 'transformer-mt[plots]'") from None
    for fmt in formats:
        if fmt not in FORMATS:
            raise TransformerMTError(f"unknown plot format {fmt!r}; use {', '.join(FORMATS)}")
    runs = [(Path(run_dir), read_metrics(run_dir)) for run_dir in run_dirs]
    output_dir = Path(output_dir)
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TransformerMTError(f"cannot create --output {output_dir}: {exc.strerror}") from None

    figure, axes = plt.subplots(2, 2, figsize=(12, 8), constrained_layout=True)
    loss, quality, rate, speed = axes.flat
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for index, (run_dir, records) in enumerate(runs):
        colour, name = colours[index % len(colours)], run_dir.name or str(run_dir)
        loss.plot(*_series(records, "train", "loss"), color=colour, label=f"{name} train")
        loss.plot(*_series(records, "valid", "loss"), color=colour, linestyle="--", marker="o", markersize=3,
                  label=f"{name} validation")
        quality.plot(*_series(records, "valid", "bleu"), color=colour, marker="o", markersize=3, label=f"{name} BLEU")
        quality.plot(*_series(records, "valid", "chrf"), color=colour, linestyle=":", marker="s", markersize=3,
                     label=f"{name} chrF")
        rate.plot(*_series(records, "train", "lr"), color=colour, label=name)
        speed.plot(*_series(records, "train", "tokens_per_s"), color=colour, label=name)
    for axis, title, ylabel in ((loss, "Loss", "label-smoothed loss (nats / target token)"),
                                (quality, "Validation BLEU and chrF", "score"),
                                (rate, "Learning rate", "learning rate"),
                                (speed, "Training speed", "target tokens / s")):
        axis.set_title(title)
        axis.set_xlabel("update (step)")
        axis.set_ylabel(ylabel)
        axis.grid(alpha=0.3)
        if axis.get_lines():
            axis.legend(fontsize="small")
    written = []
    for fmt in formats:
        path = output_dir / f"learning_curves.{fmt}"
        figure.savefig(path, dpi=110)
        written.append(path)
    plt.close(figure)
    return written
