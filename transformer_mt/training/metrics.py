"""Where a run's metrics go: ``metrics.jsonl`` always, TensorBoard event files when wanted.

    writer = MetricsWriter("runs/demo")                 # tensorboard="auto": on when installed
    writer.write({"type": "train", "step": 25, "loss": 5.1, "lr": 2.5e-4, "tokens_per_s": 2600.0,
                  "grad_norm": 1.3})
    writer.add_text("valid/translations", "source → translation", step=200)
    writer.close()

``metrics.jsonl`` holds one JSON object per line and is the record of truth (``transformer-mt
plot`` reads it, resuming truncates it to the checkpoint). TensorBoard (``tensorboard --logdir
RUN_DIR``) gets the scalars of "train" records (loss, lr, tokens_per_s, grad_norm as
``train/loss`` ...) and "valid" records (loss, ppl, bleu, chrf as ``valid/loss`` ...), and
texts, in event files under ``RUN_DIR/tensorboard/``; a multilingual run's "valid" records also
draw each direction's (``valid/de-en/bleu`` ...). A "valid_average" record (the averaged
checkpoint's validation, written once when training ends) stays in metrics.jsonl only. Its package is optional (the [plots]
extra). Only one process of a run should write: create the writer there.

The same process writes ``train.log`` (setup_logging: the "transformer_mt" logger, into the run
directory and on the console) and the training records, each the mean of the updates since the
last one (UpdateLog).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path

from ..errors import TransformerMTError
from ..safe_files import held_folder, make_run_folder, open_run_file

# The record fields drawn in TensorBoard, per record type; tags are "<type>/<field>".
TENSORBOARD_SCALARS = {
    "train": ("loss", "lr", "tokens_per_s", "grad_norm"),
    "valid": ("loss", "ppl", "bleu", "chrf"),
}
TENSORBOARD_DIR = "tensorboard"

log = logging.getLogger("transformer_mt")


def summary_writer_class():
    """torch's SummaryWriter, or None when the tensorboard package is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # torch.utils.tensorboard raises it when the tensorboard package is missing
        return None
    return SummaryWriter


class MetricsWriter:
    """The one place metrics go: ``write`` appends a record to metrics.jsonl and, when TensorBoard
    is on, adds its scalars to the event file.

    ``tensorboard``: "auto" (on when the tensorboard package can be imported), True (on; an error
    without the package) or False. ``purge_step``: when a run resumes from a checkpoint at this
    step, TensorBoard hides the events of later steps that an earlier session wrote (metrics.jsonl
    is truncated to the checkpoint the same way), so curves do not double back.
    """

    def __init__(self, run_dir, tensorboard: bool | str = "auto", purge_step: int | None = None,
                 flush_seconds: float = 10.0):
        if tensorboard not in (True, False, "auto"):
            raise ValueError(f"tensorboard must be True, False or 'auto', not {tensorboard!r}")
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / "metrics.jsonl"
        self.handle = None  # metrics.jsonl, opened once (by safe_files, by descriptor) and kept
        self.summary = None
        if tensorboard:
            summary_writer = summary_writer_class()
            if summary_writer is None and tensorboard is True:
                raise TransformerMTError("TensorBoard logging needs the tensorboard package: pip install "
                                         "'transformer-mt[plots]', or turn TensorBoard logging off")
            if summary_writer is not None:
                # A short flush interval: people watch a training's curves while it runs.
                # The folder is made (or checked) here and held open for the writer's life: SummaryWriter opens
                # its event files by name, which /proc/self/fd/N keeps on this folder (safe_files.held_folder).
                log_dir = make_run_folder(self.run_dir / TENSORBOARD_DIR)
                self.folder = contextlib.ExitStack()
                held = self.folder.enter_context(held_folder(log_dir))
                self.summary = summary_writer(log_dir=held, purge_step=purge_step, flush_secs=flush_seconds)

    @property
    def tensorboard(self) -> bool:
        """Whether TensorBoard event files are written."""
        return self.summary is not None

    def write(self, record: dict) -> None:
        """Append ``record`` to metrics.jsonl (one JSON line) and draw its scalars in TensorBoard."""
        try:
            if self.handle is None:  # never through a link planted as metrics.jsonl; O_APPEND: always at the end
                self.handle = open_run_file(self.path, "a")
            self.handle.write(json.dumps(record) + "\n")
            self.handle.flush()  # people follow metrics.jsonl while a training runs
        except OSError as exc:
            raise TransformerMTError(
                f"could not write {self.run_dir / 'metrics.jsonl'}: {exc.strerror or exc}; free disk space or make "
                f"the run directory writable, then resume (the last checkpoint is intact)") from None
        if self.summary is None or not isinstance(record.get("step"), int):
            return
        kind = record.get("type")
        # A multilingual run's validation also holds each direction's values: "valid/de-en/bleu", ...
        groups = [(kind, record)] + [(f"{kind}/{name}", values) for name, values in record.get("directions", {}).items()
                                     if isinstance(values, dict)]
        for tag, values in groups:
            for field in TENSORBOARD_SCALARS.get(kind, ()):
                value = values.get(field)
                if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                    self.summary.add_scalar(f"{tag}/{field}", value, global_step=record["step"])

    def add_text(self, tag: str, text: str, step: int) -> None:
        """Show ``text`` (Markdown) under ``tag`` at ``step`` in TensorBoard's Text tab, e.g. a few
        validation translations; metrics.jsonl does not get it."""
        if self.summary is not None:
            self.summary.add_text(tag, text, global_step=step)

    def flush(self) -> None:
        if self.summary is not None:
            self.summary.flush()

    def close(self) -> None:
        """Write what TensorBoard holds back and close its files (the writer can be closed twice)."""
        if self.handle is not None:
            self.handle.close()
            self.handle = None
        if self.summary is not None:
            self.summary.close()
            self.summary = None
            self.folder.close()

    def __enter__(self) -> MetricsWriter:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class RunLogHandler(logging.FileHandler):
    """A FileHandler for train.log that opens it the safe way: never through a planted link or FIFO."""

    def _open(self):
        return open_run_file(self.baseFilename, "a", encoding=self.encoding)


def setup_logging(run_dir: Path) -> logging.Handler:
    """Log the "transformer_mt" logger's records into ``run_dir``/train.log (returned: remove it when the run
    ends) and, once per process, on the console."""
    log.setLevel(logging.INFO)
    log.propagate = False  # our own console handler below; avoid printing every line twice
    handler = RunLogHandler(run_dir / "train.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    if not any(isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler) for h in log.handlers):
        console = logging.StreamHandler()
        console.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(console)
    return handler


class UpdateLog:
    """The training records: every ``log_every`` updates, one "train" record (``write``) of the loss and the
    tokens per second since the last one, and the progress bar (a tqdm bar) advanced at each update."""

    def __init__(self, log_every: int, write: Callable[[dict], None], progress_bar):
        self.log_every, self.write, self.progress_bar = log_every, write, progress_bar
        self.start()

    def start(self) -> None:
        """Start counting the tokens and loss that the next training record averages over."""
        self.window_tokens, self.window_loss, self.window_start = 0, 0.0, time.time()

    def leave_out(self, seconds: float) -> None:
        """Leave ``seconds`` (a validation's) out of the tokens per second."""
        self.window_start += seconds

    def update(self, stats: dict, step: int, epoch: int, lr: float) -> None:
        """Count an update's ``stats`` (Trainer.train_update's); write a record when ``step`` is due one."""
        self.window_tokens += stats["tokens"]
        self.window_loss += stats["loss"] * stats["tokens"]
        self.progress_bar.update(1)
        if step % self.log_every:
            return
        seconds = time.time() - self.window_start
        record = {"type": "train", "step": step, "epoch": epoch + 1,
                  "loss": self.window_loss / self.window_tokens, "lr": lr,
                  "tokens": self.window_tokens, "tokens_per_s": self.window_tokens / max(seconds, 1e-9),
                  "grad_norm": stats["grad_norm"]}
        self.write(record)
        self.progress_bar.set_postfix(loss=f"{record['loss']:.3f}", lr=f"{record['lr']:.2e}",
                                      tok_s=f"{record['tokens_per_s']:.0f}")
        log.debug("step %d loss %.4f", step, record["loss"])
        self.start()
