"""Every path transformer-mt writes is opened by safe_files (issue: "one resolver, by descriptor").

An AST scan of the package: code outside transformer_mt/safe_files.py that opens a path for writing by name
(``open(..., "w")``, ``Path.write_*``, ``mkdir``, ``os.open`` with ``O_CREAT``, ``torch.save``/``savefig`` to a
path, ``shutil`` copies, ``os.replace``...) fails this test: such a write would inspect nothing and follow any
link. Writing goes through safe_files.write_output / write_run_file / open_run_file / make_folders / rename...;
``torch.save`` and ``savefig`` write into the handle those functions give.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "transformer_mt"
THE_MODULE = PACKAGE / "safe_files.py"

WRITE_METHODS = {"write_text", "write_bytes", "mkdir", "makedirs", "touch", "symlink_to", "hardlink_to", "link_to",
                 "mkfifo", "mknod"}
OS_WRITES = {"replace", "rename", "renames", "link", "symlink", "mkdir", "makedirs", "mkfifo", "mknod", "truncate"}
SHUTIL_WRITES = {"copy", "copy2", "copyfile", "copytree", "move", "copymode", "copystat"}
TEMPFILE_MAKERS = {"mkstemp", "mkdtemp", "NamedTemporaryFile", "TemporaryDirectory", "TemporaryFile",
                   "SpooledTemporaryFile"}
WRITE_FLAGS = {"O_CREAT", "O_WRONLY", "O_RDWR", "O_TRUNC", "O_APPEND"}
SAVERS = {"torch.save": 1, "np.save": 0, "numpy.save": 0, "np.savez": 0, "np.savez_compressed": 0}  # file arg
# Deletions by name: a folder on the way swapped for a link would turn them elsewhere (safe_files.remove instead).
OS_DELETES = {"remove", "unlink", "rmdir", "removedirs"}
DELETE_METHODS = {"unlink", "rmdir"}
# Other libraries' writers given a path (CTranslate2's spec.save(dir), SummaryWriter(log_dir=...)): they open by
# name, so they get safe_files.held_folder's /proc/self/fd/N (a name bound to it), never a path built here.
PATH_KEYWORDS = {"log_dir", "logdir", "model_prefix", "output_dir", "save_directory"}


def _built_path(node: ast.AST | None) -> bool:
    """Whether ``node`` builds a path in place: "x", f"...", str(...)/os.fspath(...)/Path(...), a / b."""
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str)
    if isinstance(node, ast.JoinedStr):
        return True
    if isinstance(node, ast.BinOp):
        return isinstance(node.op, ast.Div)
    return isinstance(node, ast.Call) and _dotted(node.func) in ("str", "os.fspath", "Path", "pathlib.Path")



def _mode(call: ast.Call, position: int) -> str | None:
    mode = call.args[position] if len(call.args) > position else None
    for keyword in call.keywords:
        if keyword.arg == "mode":
            mode = keyword.value
    if isinstance(mode, ast.Constant) and isinstance(mode.value, str):
        return mode.value
    return None if mode is None else "?"  # a computed mode: may write


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return "?"


class _Scanner(ast.NodeVisitor):
    def __init__(self, path: Path):
        self.path = path
        self.found: list[str] = []
        self.handles: list[set[str]] = []  # parameters of the enclosing lambdas/functions: file objects given

    def _flag(self, node: ast.AST, what: str) -> None:
        self.found.append(f"{self.path.relative_to(PACKAGE.parent)}:{node.lineno}: {what}")

    def _scoped(self, node, args: ast.arguments) -> None:
        self.handles.append({a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)})
        self.generic_visit(node)
        self.handles.pop()

    def visit_Lambda(self, node):
        self._scoped(node, node.args)

    def visit_FunctionDef(self, node):
        self._scoped(node, node.args)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        name = _dotted(func)
        attr = func.attr if isinstance(func, ast.Attribute) else None
        if isinstance(func, ast.Name) and func.id == "open":
            mode = _mode(node, 1)
            if mode is not None and set(mode) & set("wax+?"):
                self._flag(node, f"open(..., {mode!r})")
        elif attr == "open" and name != "os.open":
            mode = _mode(node, 0)  # Path.open(mode)
            if mode is not None and set(mode) & set("wax+?"):
                self._flag(node, f"{name}({mode!r})")
        if name == "os.open":
            flags = {getattr(n, "attr", None) for n in ast.walk(node.args[1])} if len(node.args) > 1 else set()
            if flags & WRITE_FLAGS:
                self._flag(node, f"os.open with {sorted(flags & WRITE_FLAGS)}")
        elif name.startswith("os.") and attr in OS_WRITES:
            self._flag(node, name)
        elif name.startswith("shutil.") and attr in SHUTIL_WRITES:
            self._flag(node, name)
        elif attr in TEMPFILE_MAKERS or name in TEMPFILE_MAKERS:
            if any(k.arg == "dir" for k in node.keywords) or (attr == "mkstemp" and len(node.args) > 2):
                self._flag(node, f"{name}(dir=...)")  # in the system's temporary folder (private, 700) it is fine
        elif attr in WRITE_METHODS and not name.startswith("self."):  # self.metrics.write_text: our own
            self._flag(node, f".{attr}()")
        elif (name.startswith("os.") and attr in OS_DELETES) or name == "shutil.rmtree":
            self._flag(node, name)
        elif attr in DELETE_METHODS:
            self._flag(node, f".{attr}()")
        elif attr == "save" and name not in SAVERS and node.args and _built_path(node.args[0]):
            self._flag(node, f"{name}() to a path built here (hand it safe_files.held_folder's folder)")
        elif name in SAVERS or attr == "savefig":
            position = SAVERS.get(name, 0)
            target = node.args[position] if len(node.args) > position else None
            for keyword in node.keywords:
                if keyword.arg in ("f", "fname", "file"):
                    target = keyword.value
            given = self.handles[-1] if self.handles else set()
            if not (isinstance(target, ast.Name) and target.id in given):
                self._flag(node, f"{name}() to a path (write into the handle safe_files gives instead)")
        for keyword in node.keywords:
            if keyword.arg in PATH_KEYWORDS and _built_path(keyword.value):
                self._flag(node, f"{name}({keyword.arg}=a path built here; hand it safe_files.held_folder's folder)")
        self.generic_visit(node)


def scan(path: Path) -> list[str]:
    scanner = _Scanner(path)
    scanner.visit(ast.parse(path.read_text(encoding="utf-8"), str(path)))
    return scanner.found


def test_no_code_outside_safe_files_writes_a_path_by_name():
    found = [line for path in sorted(PACKAGE.rglob("*.py")) if path != THE_MODULE for line in scan(path)]
    assert found == [], "writes by name outside safe_files (go through it instead):\n" + "\n".join(found)


def test_the_scan_sees_each_kind_of_write(tmp_path):
    sample = PACKAGE / "_scan_sample.py"  # scanned in place of a package module, never imported
    code = '''
import os, shutil, tempfile, torch
from pathlib import Path
open("x", "w"); open("x", mode="ab"); Path("x").write_text("t"); Path("d").mkdir(); os.makedirs("d")
os.open("x", os.O_WRONLY | os.O_CREAT); torch.save({}, "x.pt"); figure.savefig("x.png"); shutil.copyfile("a", "b")
os.replace("a", "b"); tempfile.mkstemp(dir="d"); Path("x").open("w")
open("x"); open("x", "rb"); os.open("x", os.O_RDONLY); tempfile.mkdtemp(); "a".replace("a", "b")
write_run_file("x", lambda handle: torch.save({}, handle))
shutil.rmtree("d"); os.unlink("x"); Path("x").unlink(); spec.save(str(d)); SummaryWriter(log_dir=str(d / "tb"))
spec.save(folder); document.save(out); SummaryWriter(log_dir=held)
'''
    path = tmp_path / "sample.py"
    path.write_text(code)
    scanner = _Scanner(path)
    scanner.path = sample
    scanner.visit(ast.parse(code))
    assert len(scanner.found) == 17, "\n".join(scanner.found)
