"""The package layout's rules (the manual's docs/design.md, "Layout"), checked on the source so that they stay true.

- ``text/`` is pure text processing: no torch, no ``decoding/``, no model.
- Imports never run up: nothing imports ``cli``, and only ``cli`` imports ``serving/``.
- Subpackage ``__init__.py`` files only document their room (or hand names on).
- No import cycle between modules, counting every import statement: those inside functions too (a deferred
  import is a cycle in disguise: the two modules still need each other) and those under ``if TYPE_CHECKING``.
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


def module_edges(name: str, path: Path) -> dict[str, int]:
    """The package's modules that ``name`` imports, each with the line of its first import statement.

    Every statement counts: at the top, inside functions (deferred imports) and under ``if TYPE_CHECKING``
    (never run, but a type named in a signature is still a dependency: if two modules name each other's
    types, the shared ones belong in a lower module). ``from a import b`` names module ``a.b`` when there is
    one, else the names come from ``a`` itself. The packages passed on the way to a module (``import
    a.b.c`` runs ``a/__init__`` and ``a/b/__init__``) are left out: a subpackage's ``__init__`` only hands
    names on, and the package's own ``__init__`` is the public API that imports the modules below it.
    """
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    edges: dict[str, int] = {}
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            targets = [f"{module}.{alias.name}" if f"{module}.{alias.name}" in MODULES else module
                       for alias in node.names]
        else:
            continue
        for target in targets:
            if target in MODULES and target != name:
                edges.setdefault(target, node.lineno)
    return edges


def import_cycles(graph: dict[str, dict[str, int]]) -> list[tuple[list[str], set[str]]]:
    """Each group of modules that import each other (Tarjan's strongly connected components of more than one
    module), with one cycle through it: ``[a, b, ..., a]``, the shortest way back to its first module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[set[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph[node]:
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = {stack.pop()}
            while node not in group:
                group.add(stack.pop())
            if len(group) > 1:
                groups.append(group)

    for node in sorted(graph):
        if node not in index:
            connect(node)
    cycles = []
    for group in groups:
        first = min(group)
        paths = {first: [first]}
        queue = [first]
        while queue:
            node = queue.pop(0)
            for nxt in sorted(graph[node]):
                if nxt == first:
                    cycles.append((paths[node] + [first], group))
                    queue = []
                    break
                if nxt in group and nxt not in paths:
                    paths[nxt] = paths[node] + [nxt]
                    queue.append(nxt)
    return cycles


def test_no_import_cycle_counting_deferred_imports():
    graph = {name: module_edges(name, path) for name, path in MODULES.items()}
    problems = []
    for cycle, group in import_cycles(graph):
        steps = " -> ".join(f"{a} (line {graph[a][b]})" for a, b in zip(cycle, cycle[1:]))
        others = sorted(group - set(cycle))
        problems.append(f"  {steps} -> {cycle[-1]}" + (f"; in the same circle: {', '.join(others)}" if others else ""))
    assert not problems, "import cycles (move the names both need into the lower module):\n" + "\n".join(problems)


def test_the_cycle_finder_names_a_deferred_cycle():
    graph = {"a": {"b": 1}, "b": {"c": 2}, "c": {"a": 3, "d": 4}, "d": {}}
    assert import_cycles(graph) == [(["a", "b", "c", "a"], {"a", "b", "c"})]
    assert import_cycles({"a": {"b": 1}, "b": {}}) == []


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
