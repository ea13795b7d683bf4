"""MkDocs hook: a static copy of the server's OpenAPI schema, generated at build time from the FastAPI app.

``serving.server.create_app`` builds the app around a translator, of which it reads only the config when the
routes are made (the model is used once requests come). So the schema is built here without a model: the
app is created around a stand-in that holds the default ``Config`` and nothing else, and ``app.openapi()``
gives the document that a running server shows at ``/docs`` and ``/openapi.json`` (its title names the
served languages, here the defaults'). The hook writes it into the site as ``reference/openapi.json`` and
replaces the marker ``<!-- openapi-reference -->`` in ``reference/http-api.md`` with a table of the endpoints
and the fields of each request body that has a schema.
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

from page_marker import fill  # docs/hooks/page_marker.py (MkDocs puts this folder on sys.path)

ROOT = Path(__file__).resolve().parents[2]
MARKER = "<!-- openapi-reference -->"
PAGE = "reference/http-api.md"
SCHEMA_FILE = "reference/openapi.json"


def schema() -> dict:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from transformer_mt.config import Config
    from transformer_mt.serving.server import create_app

    return create_app(types.SimpleNamespace(config=Config())).openapi()


def _type(prop: dict) -> str:
    if "anyOf" in prop:
        return " or ".join(_type(p) for p in prop["anyOf"])
    if "enum" in prop:
        return " or ".join(json.dumps(v) for v in prop["enum"])
    if prop.get("type") == "array":
        return f"list of {_type(prop.get('items', {}))}"
    if "$ref" in prop:
        return prop["$ref"].rsplit("/", 1)[-1]
    bounds = [f"≥ {prop['minimum']:g}"] if "minimum" in prop else []
    bounds += [f"≤ {prop['maximum']:g}"] if "maximum" in prop else []
    kind = prop.get("type", "any")
    return f"{kind} ({', '.join(bounds)})" if bounds else kind


def _cell(text: str) -> str:
    return (text.replace("\\", "\\\\").replace("|", "\\|").replace("*", "\\*").replace("_", "\\_")
            .replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\n", " "))


def render(document: dict) -> str:
    out = ["| method | path | what it does | answers |", "|---|---|---|---|"]
    bodies = []
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            answers = ", ".join(sorted(operation.get("responses", {})))
            out.append(f"| `{method.upper()}` | `{path}` | {_cell(operation.get('summary', ''))} | {answers} |")
            content = operation.get("requestBody", {}).get("content", {})
            for media, body in content.items():
                if "properties" in body.get("schema", {}):
                    bodies.append((method.upper(), path, media, body["schema"]))
    out.append("")
    for method, path, media, body in bodies:
        required = set(body.get("required", []))
        out.append(f"### `{method} {path}` ({media})\n")
        out.append("| field | type | default | meaning |")
        out.append("|---|---|---|---|")
        for name, prop in body["properties"].items():
            default = "(required)" if name in required else f"`{json.dumps(prop['default'])}`" if "default" in prop else ""
            out.append(f"| `{name}` | {_cell(_type(prop))} | {default} | {_cell(prop.get('description', ''))} |")
        out.append("")
    return "\n".join(out)


_document: dict | None = None


def _cached() -> dict:
    global _document
    if _document is None:
        _document = schema()
    return _document


def on_files(files, config):
    from mkdocs.structure.files import File

    text = json.dumps(_cached(), indent=2, ensure_ascii=False) + "\n"
    files.append(File.generated(config, SCHEMA_FILE, content=text))
    return files


def on_page_markdown(markdown: str, page, config, files) -> str:
    return fill(markdown, page, PAGE, MARKER, lambda: render(_cached()))


def on_pre_build(config):  # mkdocs serve rebuilds: read the app again on each build
    global _document
    _document = None
