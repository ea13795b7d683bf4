"""Pictures of runs and models (optional extra [plots]: matplotlib).

    from transformer_mt.training.plotting import plot_attention, plot_learning_curves
    plot_learning_curves(["runs/a", "runs/b"], "plots/")   # -> plots/learning_curves.png
    plot_attention("runs/a", "A dog sees the cat.", "plots/")  # -> plots/attention_layer1.png, ...

Learning curves: one figure with four panels, steps on x: training and validation loss (nats per
target token), validation BLEU and chrF, learning rate, and training speed (target tokens/s).
Several runs are overlaid in one colour each, which is how recipes are compared.

Attention: the model translates one sentence and each decoder layer's encoder-decoder attention
becomes a heatmap, target pieces as rows (the piece predicted at that step), source pieces as
columns, on one 0-1 colour scale so figures compare. Matplotlib's Agg backend draws without a
display.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import TransformerMTError
from ..files import file_problem
from ..safe_files import make_folders, read_user_file, write_run_file

FORMATS = ("png", "svg", "pdf")
# A record is ~300 bytes, one per training.log_every updates and validation: a million of them is a long run.
MAX_METRICS_BYTES = 512 << 20


def read_metrics(run_dir) -> list[dict]:
    """The records of a run's metrics.jsonl (a half-written last line, as a kill leaves it, is skipped)."""
    path = Path(run_dir) / "metrics.jsonl"
    problem = file_problem(path, "the run's metrics file")
    if problem == "does not exist":
        raise TransformerMTError(f"{path} does not exist; --model must be a run directory that has trained")
    if problem is not None:  # a FIFO or a folder is named as what it is, not as missing
        raise TransformerMTError(f"{path} {problem}; put the run's metrics.jsonl there (copy the whole run "
                                 f"directory again)")
    records = []
    text = read_user_file(path, "metrics file", limit=MAX_METRICS_BYTES,
                          fix="a run logs far less; is it the run's metrics.jsonl?")
    for line in text.decode("utf-8", errors="replace").splitlines():
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


def _pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed), or a clear error without the extra."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise TransformerMTError("plotting needs matplotlib: pip install 'transformer-mt[plots]'") from None
    return plt


def _check_formats(formats) -> None:
    for fmt in formats:
        if fmt not in FORMATS:
            raise TransformerMTError(f"unknown plot format {fmt!r}; use {', '.join(FORMATS)}")


def _output_folder(output_dir) -> Path:
    output_dir = Path(output_dir)
    try:
        make_folders(output_dir, "--output")  # by descriptor: never through another user's link on the way
    except OSError as exc:
        raise TransformerMTError(f"cannot create --output {output_dir}: {exc.strerror}") from None
    return output_dir


def _save_figure(figure, path: Path, fmt: str) -> None:
    """Write a figure atomically, never through a link planted under its name (plots go into run directories)."""
    try:
        write_run_file(path, lambda handle: figure.savefig(handle, format=fmt, dpi=110))
    except OSError as exc:
        raise TransformerMTError(f"cannot write plot {path}: {exc.strerror or exc}; make {path.parent} writable "
                                 f"or choose another --output") from None


def plot_learning_curves(run_dirs: list, output_dir, formats: tuple[str, ...] = ("png",)) -> list[Path]:
    """Draw the learning curves of one or more runs; return the files written."""
    plt = _pyplot()
    _check_formats(formats)
    runs = [(Path(run_dir), read_metrics(run_dir)) for run_dir in run_dirs]
    output_dir = _output_folder(output_dir)

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
        _save_figure(figure, path, fmt)
        written.append(path)
    plt.close(figure)
    return written


def plot_attention(model, sentence: str, output_dir, layer: int | None = None, head: int | str | None = None,
                   self_attention: bool = False, formats: tuple[str, ...] = ("png",), beam_size: int | None = None,
                   checkpoint: str = "best", target_language: str | None = None):
    """Translate ``sentence`` and draw its attention; return (files written, the SentenceAttention).

    ``model``: a run directory or a :class:`~transformer_mt.decoding.translator.Translator`. ``layer``: one
    decoder layer, numbered from 1 (default: all, one figure each). ``head``: None averages the
    heads, a number (from 1) draws that head, "all" draws one figure per head. ``self_attention``
    also draws the decoder self-attention. ``beam_size`` (default: the run's decoding.beam_size)
    1 decodes with greedy search, more with beam search. ``target_language``: the direction of a multilingual
    model.
    """
    from ..decoding.translator import Translator

    plt = _pyplot()  # before minutes of model loading, not after
    _check_formats(formats)
    if not isinstance(sentence, str) or not sentence.strip():
        raise TransformerMTError("--attention needs a sentence to translate; it is empty")
    translator = model if isinstance(model, Translator) else Translator.from_run(model, checkpoint=checkpoint)
    num_layers, num_heads = len(translator.model.decoder_layers), translator.model.cfg.num_heads
    if layer is not None and not 1 <= layer <= num_layers:
        raise TransformerMTError(f"--layer {layer} does not exist: the model has {num_layers} decoder layer(s), "
                                 f"numbered 1 to {num_layers}")
    if head is not None and head != "all" and not (isinstance(head, int) and 1 <= head <= num_heads):
        raise TransformerMTError(f"--head {head} does not exist: the model has {num_heads} attention heads, "
                                 f"numbered 1 to {num_heads} (or 'all')")
    attention = translator.attention(sentence, beam_size, self_attention=self_attention,
                                     target_language=target_language)
    output_dir = _output_folder(output_dir)
    layers = [layer] if layer is not None else list(range(1, num_layers + 1))
    heads = [None] if head is None else list(range(1, num_heads + 1)) if head == "all" else [head]
    decoder_inputs = ["<s>"] + attention.target_pieces[:-1]
    kinds = [("attention", "Cross-attention", attention.cross_attention, attention.source_pieces, "source")]
    if self_attention:
        kinds.append(("self_attention", "Decoder self-attention", attention.self_attention, decoder_inputs,
                      "decoder input"))
    written = []
    for name, title, weights, columns, column_label in kinds:
        for layer_number in layers:
            for head_number in heads:
                layer_weights = weights[layer_number - 1]  # (heads, target, columns)
                matrix = layer_weights.mean(dim=0) if head_number is None else layer_weights[head_number - 1]
                which = "heads averaged" if head_number is None else f"head {head_number} of {num_heads}"
                figure = _heatmap(plt, matrix.numpy(), attention.target_pieces, columns, column_label,
                                  f"{title}, decoder layer {layer_number} of {num_layers}, {which}")
                stem = f"{name}_layer{layer_number}" + ("" if head_number is None else f"_head{head_number}")
                for fmt in formats:
                    path = output_dir / f"{stem}.{fmt}"
                    _save_figure(figure, path, fmt)
                    written.append(path)
                plt.close(figure)
    return written, attention


def _heatmap(plt, matrix, rows: list[str], columns: list[str], column_label: str, title: str):
    """One attention matrix: a row per target piece, a column per source piece (or decoder input)."""
    # About a third of an inch per cell keeps piece labels legible at any sentence length; a short
    # sentence still gets the width of its title (about 0.08 inch per character at 10 points).
    width = max(4.5, 0.32 * len(columns) + 2.6, 0.08 * len(title) + 0.6)
    height = max(3.5, 0.32 * len(rows) + 1.8)
    figure, axis = plt.subplots(figsize=(width, height), constrained_layout=True)
    image = axis.imshow(matrix, cmap="viridis", vmin=0.0, vmax=1.0, aspect="equal", interpolation="nearest")
    axis.set_xticks(range(len(columns)), labels=columns, rotation=90, fontsize=9)
    axis.set_yticks(range(len(rows)), labels=rows, fontsize=9)
    axis.set_xlabel(f"{column_label} piece")
    axis.set_ylabel("target piece")
    figure.suptitle(title, fontsize=10)  # centred on the figure: a narrow heatmap would cut it
    figure.colorbar(image, ax=axis, label="attention weight", shrink=0.8)
    return figure
