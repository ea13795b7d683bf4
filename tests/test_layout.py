"""The package layout's rules (the manual's docs/design.md, "Layout"), checked on the source so that they stay true.

- ``text/`` is pure text processing: no torch, no ``decoding/``, no model.
- Imports never run up: nothing imports ``cli``, and only ``cli`` imports ``serving/``.
- Subpackage ``__init__.py`` files only document their room (or hand names on).
- No import cycle between modules at import time (imports inside functions are left out:
  they run later, when every module is loaded).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "transformer_mt"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path, top_level_only: bool) -> set[str]:
    """Absolute names of the modules ``path`` imports (relative imports resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            found.add(module)
            # "from . import checkpoint" imports a module too
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def test_text_room_imports_no_torch_and_no_decoding():
    for name, path in MODULES.items():
        if not name.startswith("transformer_mt.text"):
            continue
        for imported in imports(path, top_level_only=False):
            assert imported.split(".")[0] not in ("torch", "numpy"), (name, imported)
            assert not imported.startswith(("transformer_mt.decoding", "transformer_mt.model",
                                            "transformer_mt.training", "transformer_mt.serving")), (name, imported)


def test_imports_never_run_up():
    for name, path in MODULES.items():
        for imported in imports(path, top_level_only=False):
            if name not in ("transformer_mt.cli", "transformer_mt.__main__"):
                assert imported != "transformer_mt.cli", (name, imported)
            if not name.startswith(("transformer_mt.cli", "transformer_mt.serving")):
                assert not imported.startswith("transformer_mt.serving"), (name, imported)


def test_subpackage_inits_only_document_or_hand_names_on():
    for path in PACKAGE.glob("*/__init__.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        assert ast.get_docstring(tree), f"{path} should say what its room holds"
        for node in tree.body[1:]:
            assert isinstance(node, (ast.Import, ast.ImportFrom, ast.Assign)), (path, ast.dump(node)[:80])


def test_no_import_cycle_at_import_time():
    graph = {name: {m for m in imports(path, top_level_only=True) if m in MODULES and m != name}
             for name, path in MODULES.items()}
    # A package's __init__ is imported on the way to its modules, not the other way round.
    for name in graph:
        graph[name] = {m for m in graph[name] if not name.startswith(m + ".")}
    state: dict[str, int] = {}

    def visit(node, stack):
        state[node] = 1
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack + [node, nxt]))
            if nxt not in state:
                visit(nxt, stack + [node])
        state[node] = 2

    for name in graph:
        if name not in state:
            visit(name, [])


def layout_map() -> str:
    """The manual's Layout section (docs/design.md): the package map a newcomer reads instead of the folders."""
    design = (PACKAGE.parent / "docs" / "design.md").read_text(encoding="utf-8")
    section = design.split("\n## Layout\n", 1)[1]
    return section.split("\n## ", 1)[0]


def test_layout_map_names_every_module_and_script():
    # A module or script added without a line in the map is found only by reading the folders.
    described = layout_map()
    modules = [p for p in PACKAGE.rglob("*.py") if p.name not in ("__init__.py", "__main__.py")]
    missing = sorted(str(p.relative_to(PACKAGE)) for p in modules if p.name not in described)
    scripts = [p for p in (PACKAGE.parent / "scripts").glob("*.py")
               if not p.name.startswith(("download_", "make_"))]  # the setup helpers are named as a group
    missing += sorted(f"scripts/{p.name}" for p in scripts if p.name not in described)
    assert not missing, f"docs/design.md's Layout does not describe: {missing}"
    named = set(re.findall(r"\b(\w+\.py)\b", described))
    known = {p.name for p in modules} | {p.name for p in (PACKAGE.parent / "scripts").glob("*.py")} | {"cli.py"}
    gone = sorted(named - known - {"__init__.py", "__main__.py"})
    assert not gone, f"docs/design.md's Layout names files that do not exist: {gone}"
