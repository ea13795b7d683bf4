"""MkDocs hook: the configuration reference, generated from ``transformer_mt/config.py`` at build time.

The dataclasses are the one source of truth: every key is a field of a section of ``Config`` (or of a
dataclass a section holds in a list, such as ``data.train_corpora``). Its type and default come from
``dataclasses.fields``; its meaning from the comments written beside it in the source (the comment at the
end of its line, and the comment lines right above it), read with ``tokenize``; the allowed values from
``config.CHOICES``, ``MINIMUMS`` and ``MAXIMUMS``. The page ``reference/configuration.md`` holds the marker
``<!-- config-reference -->``, which this hook replaces with the tables. ``tests/test_docs.py`` imports this
module to check that no key lacks a comment and that every key is listed with its default.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import io
import sys
import tokenize
import typing
from pathlib import Path

import yaml
from page_marker import fill  # docs/hooks/page_marker.py (MkDocs puts this folder on sys.path)

ROOT = Path(__file__).resolve().parents[2]
MARKER = "<!-- config-reference -->"
PAGE = "reference/configuration.md"


def _config_module():
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from transformer_mt import config

    return config


@dataclasses.dataclass
class Key:
    name: str  # "data.train_corpora[].prefix" for a field of a listed dataclass
    type: str
    default: object
    comment: str


def _comments_by_line(source: str) -> tuple[dict[int, str], set[int]]:
    """The comment of each line (1-based) and the lines that hold nothing but a comment."""
    comments, alone = {}, set()
    lines = source.splitlines()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            line = token.start[0]
            comments[line] = token.string[1:].strip()
            if lines[line - 1].strip().startswith("#"):
                alone.add(line)
    return comments, alone


def field_comments(cls) -> dict[str, str]:
    """``cls``'s fields and the comments beside them in its source: the lines right above, then the line's own."""
    path = inspect.getsourcefile(cls)
    source = Path(path).read_text(encoding="utf-8")
    comments, alone = _comments_by_line(source)
    node = next(n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.ClassDef) and n.name == cls.__name__)
    found = {}
    for statement in node.body:
        if not (isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name)):
            continue
        above, line = [], statement.lineno - 1
        while line in alone:
            above.insert(0, comments[line])
            line -= 1
        own = [comments[statement.end_lineno]] if statement.end_lineno in comments else []
        if statement.end_lineno in alone:  # a comment line inside a multi-line statement is no trailing comment
            own = []
        found[statement.target.id] = " ".join(above + own)
    return found


def _default(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def _listed_dataclass(hint):
    """The dataclass of a ``list[SomeConfig]`` field, else None."""
    if typing.get_origin(hint) is list:
        args = typing.get_args(hint)
        if args and dataclasses.is_dataclass(args[0]):
            return args[0]
    return None


def sections() -> list[tuple[str, type]]:
    """(section name, dataclass) of every config section, in the order of ``Config``."""
    config = _config_module()
    hints = typing.get_type_hints(config.Config)
    return [(f.name, hints[f.name]) for f in dataclasses.fields(config.Config)]


def keys_of(prefix: str, cls) -> list[Key]:
    """Every key of the dataclass ``cls`` under ``prefix``, listed dataclasses' fields after their list."""
    hints = typing.get_type_hints(cls)
    comments = field_comments(cls)
    keys, nested = [], []
    for f in dataclasses.fields(cls):
        name = f"{prefix}.{f.name}"
        keys.append(Key(name, f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type)),
                        _default(f), comments.get(f.name, "")))
        inner = _listed_dataclass(hints[f.name])
        if inner is not None:
            nested.extend(keys_of(f"{name}[]", inner))
    return keys + nested


def all_keys() -> list[Key]:
    return [key for name, cls in sections() for key in keys_of(name, cls)]


def yaml_value(value) -> str:
    """``value`` as it would be written in a config file (flow style, one line)."""
    text = yaml.safe_dump([value], default_flow_style=True, width=10**6).strip()
    return text[1:-1]  # without the list's brackets


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell: no column breaks, no raw HTML, no emphasis by accident."""
    text = text.replace("\\", "\\\\").replace("|", "\\|").replace("*", "\\*").replace("_", "\\_")
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _code(text: str) -> str:
    return f"`{text}`"


def allowed(key: str) -> str:
    config = _config_module()
    choices = getattr(config, "CHOICES", {}).get(key)
    if choices:
        return " \\| ".join(_code(c) for c in choices)
    low = getattr(config, "MINIMUMS", {}).get(key)
    high = getattr(config, "MAXIMUMS", {}).get(key)
    parts = []
    if low is not None:
        bound, inclusive = low
        parts.append(f"{'≥' if inclusive else '>'} {bound:g}" if isinstance(bound, float) else
                     f"{'≥' if inclusive else '>'} {bound}")
    if high is not None:
        parts.append(f"≤ {high:g}" if isinstance(high, float) else f"≤ {high:,}")
    return ", ".join(parts)


def render() -> str:
    """The Markdown tables of every section: key, type, default, allowed values, meaning."""
    out = []
    for name, cls in sections():
        out.append(f"### `{name}`\n")
        doc = (inspect.getdoc(cls) or "").strip()
        if doc and not doc.startswith(cls.__name__ + "("):  # dataclasses get a generated signature as doc
            out.append(doc + "\n")
        out.append("| key | type | default | allowed | meaning |")
        out.append("|---|---|---|---|---|")
        for key in keys_of(name, cls):
            out.append(f"| {_code(key.name)} | {_code(key.type)} | {_code(yaml_value(key.default))} | "
                       f"{allowed(key.name)} | {_cell(key.comment)} |")
        out.append("")
    return "\n".join(out)


def on_page_markdown(markdown: str, page, config, files) -> str:
    return fill(markdown, page, PAGE, MARKER, render)

