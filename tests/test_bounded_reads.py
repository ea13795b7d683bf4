"""What a command reads into memory whole is bounded in one place (issue 39, "safe by construction": the fourth
probe's H2 and D2): safe_files.read_within, with a limit each caller must give (read_user_file and
read_regular_file take no default), and an error naming the option or file, its size and the limit. Model
weights are not read whole at all: safetensors through its header and a mapping, torch files after an estimate
of the memory they take. An AST scan of the package fails on any read that bypasses this; the other tests show
each input the probe read whole (a sparse file of gigabytes, costing no disk) refused at once, in one line.

And a FIFO of the user's own given as an input waits for its writer, as ``cat`` does (D2)."""

from __future__ import annotations

import ast
import inspect
import io
import json
import os
import threading
import time
from pathlib import Path

import pytest
import torch
from conftest import assert_clean_error, run_cli
from hypothesis import given, settings
from hypothesis import strategies as st

from transformer_mt import checkpoint, safe_files
from transformer_mt import model as models
from transformer_mt.errors import TransformerMTError

PACKAGE = Path(__file__).resolve().parents[1] / "transformer_mt"

# Reads of a whole file or stream by other means than read_within.
WHOLE_READ_METHODS = {"read_bytes", "read_text", "readlines"}
WHOLE_LOADERS = {"json.load", "pickle.load", "np.load", "numpy.load", "yaml.load", "yaml.safe_load_all"}
# torch.load allocates what the file declares: only after checkpoint.check_torch_file_fits, in one function.
TORCH_LOAD_HOME = ("checkpoint.py", "load_torch_file")
BOUNDED_READERS = {"read_user_file": 2, "read_regular_file": 1}  # the position of their limit


class _Scanner(ast.NodeVisitor):
    def __init__(self, path: Path):
        self.path = path
        self.found: list[str] = []
        self.functions: list[str] = []

    def _flag(self, node: ast.AST, what: str) -> None:
        self.found.append(f"{self.path.relative_to(PACKAGE.parent)}:{node.lineno}: {what}")

    def visit_FunctionDef(self, node):
        self.functions.append(node.name)
        self.generic_visit(node)
        self.functions.pop()

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        name = ast.unparse(func)
        attr = func.attr if isinstance(func, ast.Attribute) else None
        unbounded = not node.args or _literal(node.args[0]) in (-1, None)
        if attr == "read" and unbounded:
            self._flag(node, f"{name}() reads to the end (safe_files.read_within bounds it)")
        elif attr in WHOLE_READ_METHODS:
            self._flag(node, f".{attr}() reads a whole file by name")
        elif name in WHOLE_LOADERS and not _in_memory(node.args[0] if node.args else None):
            self._flag(node, f"{name}() reads a whole stream")
        elif name == "torch.load" and (self.path.name, (self.functions or [""])[-1]) != TORCH_LOAD_HOME:
            self._flag(node, "torch.load without the memory estimate (checkpoint.load_torch_file)")
        elif name in ("safetensors.torch.load", "load_safetensors", "safetensors.torch.load_file"):
            self._flag(node, f"{name}() reads a whole weights file")
        elif isinstance(func, ast.Name) and func.id in BOUNDED_READERS:
            if len(node.args) <= BOUNDED_READERS[func.id] and not any(k.arg == "limit" for k in node.keywords):
                self._flag(node, f"{func.id} without a limit")
        elif (name in ("open", "io.open") or (name == "os.open" and self.path.name != "safe_files.py")):
            first = node.args[0] if node.args else None
            if not (isinstance(first, ast.Constant) and str(first.value).startswith("/proc/")):
                self._flag(node, f"{name}() of a path by name (safe_files opens user files, by descriptor)")
        self.generic_visit(node)


def _in_memory(node: ast.AST | None) -> bool:
    """A loader given ``io.BytesIO(data)`` reads bytes already read (within a bound), not a file."""
    return isinstance(node, ast.Call) and ast.unparse(node.func) in ("io.BytesIO", "BytesIO")


def _literal(node: ast.AST):
    try:
        return ast.literal_eval(node)
    except ValueError:
        return ...  # computed: a size


def scan(path: Path, code: str | None = None) -> list[str]:
    scanner = _Scanner(path)
    scanner.visit(ast.parse(code if code is not None else path.read_text(encoding="utf-8")))
    return scanner.found


def test_nothing_in_the_package_reads_a_file_whole_without_a_bound():
    found = [line for path in sorted(PACKAGE.rglob("*.py")) for line in scan(path)]
    assert found == [], "unbounded reads (go through safe_files.read_within instead):\n" + "\n".join(found)


def test_the_scan_sees_each_kind_of_unbounded_read():
    code = '''
import json, os, sys, torch
from pathlib import Path
sys.stdin.buffer.read(); handle.read(-1); Path("x").read_bytes(); Path("x").read_text(); handle.readlines()
json.load(handle); torch.load(handle); read_user_file(path, "what"); read_regular_file(path)
open("x"); os.open("x", os.O_RDONLY); load_safetensors(data)
handle.read(10); read_user_file(path, "what", limit=5); read_regular_file(path, 5); open("/proc/cpuinfo")
'''
    found = scan(PACKAGE / "sample.py", code)
    assert len(found) == 12, "\n".join(found)


def test_the_bounded_readers_cannot_be_called_without_a_limit():
    for function in (safe_files.read_user_file, safe_files.read_regular_file):
        parameter = inspect.signature(function).parameters["limit"]
        assert parameter.default is inspect.Parameter.empty, function


@settings(max_examples=60, deadline=None)
@given(size=st.integers(0, 3000), limit=st.integers(0, 3000), pipe=st.booleans())
def test_read_within_gives_the_bytes_exactly_when_they_fit(tmp_path_factory, size, limit, pipe):
    """A file of ``size`` bytes, a regular file or a pipe (whose size is known only by reading): its bytes when
    ``size <= limit``, else one error naming it, the limit and (for a file) its size; never more than
    ``limit + 1`` bytes taken from the pipe."""
    data = os.urandom(size)
    if pipe:
        reader, writer = os.pipe()
        feeder = threading.Thread(target=lambda: (os.write(writer, data) if data else None, os.close(writer)))
        feeder.start()
        handle = os.fdopen(reader, "rb")
    else:
        path = tmp_path_factory.mktemp("within") / "file"
        path.write_bytes(data)
        handle = open(path, "rb")
    with handle:
        if size <= limit:
            assert safe_files.read_within(handle, limit, "--input f", "split it") == data
        else:
            with pytest.raises(TransformerMTError) as error:
                safe_files.read_within(handle, limit, "--input f", "split it")
            message = str(error.value)
            assert message.startswith("--input f ") and message.endswith("; split it")
            assert safe_files.amount(limit) in message
            assert (safe_files.amount(size) in message) if not pipe else "more than" in message
            if pipe:
                assert len(handle.read()) == size - (limit + 1)  # the rest was never taken
    if pipe:
        feeder.join()


@pytest.fixture
def sparse(tmp_path):
    """A file of ``size`` bytes that takes no disk (as the probe's 6 GB ones): what is read whole is refused
    from its size, before a byte is read."""
    def make(name: str, size: int = 2 << 30) -> Path:
        path = tmp_path / name
        with open(path, "wb") as handle:
            handle.truncate(size)
        return path
    return make


def test_text_inputs_read_whole_are_refused_from_their_size(sparse, tmp_path, small_run):
    big, small = sparse("big.txt"), tmp_path / "small.txt"
    small.write_text("ba de\n", encoding="utf-8")
    run = small_run[2]
    for args, option in ((("translate", "--model", run, "--input", big), "--input"),
                         (("translate", "--model", run, "--format", "html", "--input", big), "--input"),
                         (("evaluate", "--hyp", big, "--ref", small), "--hyp"),
                         (("evaluate", "--hyp", small, "--ref", big), "--ref"),
                         (("serve", "--model", run, "--port", "0", "--api-key-file", sparse("keys", 5 << 20)),
                          "--api-key-file")):
        started = time.monotonic()
        line = assert_clean_error(run_cli(*args), f"{option} ", " GiB" if option != "--api-key-file" else " MiB",
                                  "more than the")
        assert time.monotonic() - started < 60, line


def test_plot_refuses_a_huge_metrics_file_and_names_a_fifo_as_a_fifo(sparse, small_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(small_run[2], run)
    (run / "metrics.jsonl").unlink()
    os.mkfifo(run / "metrics.jsonl")
    line = assert_clean_error(run_cli("plot", "--model", run, "--output", tmp_path / "plots", timeout=60),
                              "metrics.jsonl is not a regular file")
    assert "does not exist" not in line
    (run / "metrics.jsonl").unlink()
    os.rename(sparse("metrics.jsonl", 1 << 30), run / "metrics.jsonl")
    assert_clean_error(run_cli("plot", "--model", run, "--output", tmp_path / "plots", timeout=60),
                       "metrics file", "1 GiB, more than the 512 MiB")


def _safetensors(path: Path, header: dict, data: bytes = b"", extra: int = 0) -> Path:
    encoded = json.dumps(header).encode()
    with open(path, "wb") as handle:
        handle.write(len(encoded).to_bytes(8, "little") + encoded + data)
        if extra:
            handle.truncate(handle.tell() + extra)
    return path


@pytest.mark.parametrize("case, message", [
    ("header_size", "header size"),
    ("declares_more", "truncated"),
    ("holes_after", "something was added"),
    ("too_large", "more than this machine's memory"),
])
def test_safetensors_weights_are_checked_from_their_header_before_any_tensor(tmp_path, monkeypatch, case, message):
    from transformer_mt.interop.hf_files import _read_weights

    pytest.importorskip("safetensors")
    folder = tmp_path / "hf"
    folder.mkdir()
    path = folder / "model.safetensors"
    entry = {"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}
    if case == "header_size":
        path.write_bytes((1 << 40).to_bytes(8, "little") + b"{}")
    elif case == "declares_more":
        _safetensors(path, {"w": {"dtype": "F32", "shape": [1 << 28], "data_offsets": [0, 1 << 30]}}, bytes(8))
    elif case == "holes_after":
        _safetensors(path, entry, bytes(8), extra=1 << 32)
    else:
        monkeypatch.setattr(models, "_physical_memory", lambda: 4)
        _safetensors(path, entry, bytes(8))
    with pytest.raises(TransformerMTError, match=message):
        _read_weights(folder)
    monkeypatch.undo()
    _safetensors(path, entry, torch.tensor([1.0, 2.0]).numpy().tobytes())
    weights, _ = _read_weights(folder)
    assert weights["w"].tolist() == [1.0, 2.0]


def test_torch_files_too_large_for_this_machine_are_refused_before_loading(tmp_path, monkeypatch):
    path = tmp_path / "weights.pt"
    torch.save({"w": torch.zeros(1000)}, path)
    with open(path, "rb") as handle:
        assert checkpoint.load_torch_file(handle, "weights")["w"].shape == (1000,)
        monkeypatch.setattr(models, "_physical_memory", lambda: 2000)  # the tensor alone is 4000 bytes
        with pytest.raises(TransformerMTError, match=r"weights holds [\d.]+ KiB of tensors, more than this machine's "
                                                     r"memory \(1.95 KiB\)"):
            checkpoint.load_torch_file(handle, "weights")
    legacy = tmp_path / "legacy.pt"
    torch.save({"w": torch.zeros(1000)}, legacy, _use_new_zipfile_serialization=False)
    with open(legacy, "rb") as handle, pytest.raises(TransformerMTError, match="more than this machine's memory"):
        checkpoint.load_torch_file(handle, "legacy")  # no zip directory: its size is the estimate


def test_every_checkpoint_load_goes_through_the_estimate(small_run, monkeypatch):
    monkeypatch.setattr(models, "_physical_memory", lambda: 1000)
    with pytest.raises(TransformerMTError, match=r"checkpoint .*checkpoint_best.pt holds .* more than this machine"):
        checkpoint.load_checkpoint(Path(small_run[2]) / "checkpoint_best.pt")


# --- D2: a FIFO of one's own as --input waits for its writer ---------------------------------------------------

def _write_later(path: Path, data: bytes, delay: float) -> threading.Thread:
    def write():
        time.sleep(delay)
        with open(path, "wb") as fifo:  # blocks until the reader has opened it
            fifo.write(data)
    thread = threading.Thread(target=write)
    thread.start()
    return thread


@pytest.mark.parametrize("delay", [0.0, 1.0])
def test_a_fifo_of_ones_own_waits_for_a_writer_that_starts_late(tmp_path, delay):
    from transformer_mt.data.batches import read_lines

    fifo = tmp_path / "input.fifo"
    os.mkfifo(fifo)
    writer = _write_later(fifo, b"ba de\nko mu\n", delay)
    try:
        assert read_lines(fifo, "--input") == ["ba de", "ko mu"]
    finally:
        writer.join(timeout=30)


def test_a_fifo_whose_writer_writes_nothing_reads_as_empty(tmp_path):
    from transformer_mt.data.batches import read_lines

    fifo = tmp_path / "input.fifo"
    os.mkfifo(fifo)
    writer = _write_later(fifo, b"", 0.5)
    try:
        assert read_lines(fifo, "--input") == []
    finally:
        writer.join(timeout=30)


def test_a_pipe_as_dev_stdin_is_read_at_once_whatever_its_writer_did(tmp_path):
    """A pipe's writer was there when it was made: an ended one is the end, no waiting (as ``true | cat``)."""
    result = run_cli("evaluate", "--hyp", "/dev/stdin", "--ref", "/dev/stdin", input_bytes=b"", timeout=60)
    assert_clean_error(result, "nothing to score")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: a FIFO of another user")
def test_a_fifo_of_another_user_is_still_refused_without_waiting(tmp_path):
    from transformer_mt.data.batches import read_lines

    fifo = tmp_path / "input.fifo"
    os.mkfifo(fifo)
    os.chown(fifo, 54321, 54321)
    started = time.monotonic()
    with pytest.raises(TransformerMTError, match="belongs to another user"):
        read_lines(fifo, "--input")
    assert time.monotonic() - started < 5


def test_stdin_is_bounded_too():
    with pytest.raises(TransformerMTError, match="standard input gives more than the 8 bytes"):
        safe_files.read_within(io.BufferedReader(io.BytesIO(b"123456789")), 8, "standard input", "split it")
