"""MkDocs hook: the rows of ``results/results.jsonl`` as a table on ``results.md``, generated at build time.

``scripts/reproduce.py`` appends one JSON row per trained-and-scored model to that file; this hook replaces
the marker ``<!-- results-log -->`` with them, so the logged runs are never copied by hand.
"""

from __future__ import annotations

import json
from pathlib import Path

from page_marker import fill  # docs/hooks/page_marker.py (MkDocs puts this folder on sys.path)

ROOT = Path(__file__).resolve().parents[2]
MARKER = "<!-- results-log -->"
PAGE = "results.md"
LOG = ROOT / "results" / "results.jsonl"


def render() -> str:
    rows = [json.loads(line) for line in LOG.read_text(encoding="utf-8").splitlines() if line.strip()]
    out = ["| date | recipe | test BLEU | chrF | checkpoint | training | command | machine |",
           "|---|---|---:|---:|---|---|---|---|"]
    for row in rows:
        out.append(f"| {row['date']} | {row['name']} | {row['bleu']:.2f} | {row['chrf']:.2f} | {row['checkpoint']} | "
                   f"{row['train_minutes']} min, {row['steps']:,} updates | `{row['command']}` | {row['machine']} |")
    return "\n".join(out) + "\n"


def on_page_markdown(markdown: str, page, config, files) -> str:
    return fill(markdown, page, PAGE, MARKER, render)
