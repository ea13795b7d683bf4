"""MkDocs hook: every command's ``--help``, generated at build time from ``transformer_mt.cli.build_parser``.

The page ``reference/cli.md`` holds the marker ``<!-- cli-reference -->``; this hook replaces it with the
help of ``transformer-mt`` and of each of its commands, in ``--help`` order, as the command prints it in a
terminal 100 columns wide.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from page_marker import fill  # docs/hooks/page_marker.py (MkDocs puts this folder on sys.path)

ROOT = Path(__file__).resolve().parents[2]
MARKER = "<!-- cli-reference -->"
PAGE = "reference/cli.md"


def commands() -> list[tuple[str, str]]:
    """(command, its help text), the top-level command first."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from transformer_mt.cli import build_parser

    columns = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "100"  # argparse wraps to the terminal's width: the same page on every machine
    try:
        parser = build_parser()
        found = [("transformer-mt", parser.format_help())]
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                found += [(f"transformer-mt {name}", sub.format_help()) for name, sub in action.choices.items()]
    finally:
        if columns is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = columns
    return found


def render() -> str:
    out = []
    for name, text in commands():
        out.append(f"## `{name}`\n\n```text\n{text.rstrip()}\n```\n")
    return "\n".join(out)


def on_page_markdown(markdown: str, page, config, files) -> str:
    return fill(markdown, page, PAGE, MARKER, render)
