"""Stored glossaries of a server, as DeepL's API has them: ``POST /v1/glossaries`` keeps one and answers its id,
``GET /v1/glossaries[/ID]`` lists them or gives one with its entries, ``DELETE /v1/glossaries/ID`` removes it;
``/translate``, ``/translate_file`` and ``/v1/translate`` take ``glossary_id`` (``/v1/translate`` also the
entries themselves, ``glossary``).

They are kept in memory only, for the life of the process (a restart forgets them, as it forgets translated
files waiting for their download), with limits on their number and their entries, so that clients cannot grow the
server's memory without bound. Behind the API key when the server has one.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
from dataclasses import dataclass

from fastapi import Request, Response

from ..errors import TransformerMTError
from ..text.glossary import Glossary

MAX_GLOSSARIES = 100
MAX_STORED_ENTRIES = 200_000  # all glossaries together (each at most text.glossary.MAX_ENTRIES)
MAX_NAME_CHARS = 200


class GlossaryError(Exception):
    """A refused glossary request: ``status`` is the HTTP status it answers with."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class StoredGlossary:
    glossary_id: str
    name: str
    source: str
    target: str
    glossary: Glossary
    creation_time: str

    def info(self) -> dict:
        """The glossary's description, as DeepL's API gives it (without the entries)."""
        return {"glossary_id": self.glossary_id, "name": self.name, "source_lang": self.source,
                "target_lang": self.target, "entry_count": len(self.glossary), "creation_time": self.creation_time,
                "ready": True}


class GlossaryStore:
    """The server's glossaries by id; safe to use from several threads."""

    def __init__(self, max_glossaries: int = MAX_GLOSSARIES, max_entries: int = MAX_STORED_ENTRIES):
        self.max_glossaries, self.max_entries = max_glossaries, max_entries
        self.glossaries: dict[str, StoredGlossary] = {}
        self.lock = threading.Lock()

    def add(self, name, source: str, target: str, glossary: Glossary) -> StoredGlossary:
        if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME_CHARS:
            raise GlossaryError(400, f"'name' must be a text of 1 to {MAX_NAME_CHARS} characters")
        if not name.encode("utf-8", "replace").decode("utf-8") == name:  # a lone surrogate: valid JSON, no text
            raise GlossaryError(400, "'name' is not valid Unicode text (a lone surrogate)")
        stored = StoredGlossary(secrets.token_hex(16), name.strip(), source, target, glossary,
                                time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        with self.lock:
            if len(self.glossaries) >= self.max_glossaries:
                raise GlossaryError(413, f"this server keeps at most {self.max_glossaries} glossaries; delete one "
                                         f"first (DELETE /v1/glossaries/ID)")
            held = sum(len(g.glossary) for g in self.glossaries.values())
            if held + len(glossary) > self.max_entries:
                raise GlossaryError(413, f"this server keeps at most {self.max_entries:,} glossary entries in all "
                                         f"({held:,} now); delete a glossary first")
            self.glossaries[stored.glossary_id] = stored
        return stored

    def get(self, glossary_id) -> StoredGlossary:
        with self.lock:
            stored = self.glossaries.get(glossary_id) if isinstance(glossary_id, str) else None
        if stored is None:
            raise GlossaryError(404, "no glossary with this glossary_id (glossaries are kept until the server "
                                     "restarts); GET /v1/glossaries lists them")
        return stored

    def remove(self, glossary_id) -> None:
        self.get(glossary_id)
        with self.lock:
            self.glossaries.pop(glossary_id, None)

    def all(self) -> list[StoredGlossary]:
        with self.lock:
            return list(self.glossaries.values())


def add_glossary_routes(app, store: GlossaryStore, *, pair_problem, read_json, check_api_key, refuse) -> None:
    """``/v1/glossaries`` on ``app``. ``pair_problem(source, target)``: why the server keeps no glossary for
    that pair (one it does not translate), or None; ``read_json(request)``: the request's JSON body, read
    within the server's limits; ``check_api_key(key)``; ``refuse(status, message)``: raise the server's error
    answer."""

    def stored(glossary_id) -> StoredGlossary:
        try:
            return store.get(glossary_id)
        except GlossaryError as exc:
            refuse(exc.status, str(exc))

    @app.post("/v1/glossaries", summary="Keep a glossary (name, source, target, entries); answers its glossary_id")
    async def create_glossary(request: Request):
        body = await read_json(request)
        if not isinstance(body, dict):
            refuse(400, "the body must be a JSON object with 'name', 'source', 'target' and 'entries'")
        check_api_key(body.get("api_key"))
        problem = pair_problem(body.get("source"), body.get("target"))
        if problem is not None:
            refuse(400, problem)
        try:
            glossary = await asyncio.to_thread(Glossary.from_entries, body.get("entries"), "'entries'")
            kept = store.add(body.get("name"), body["source"], body["target"], glossary)
        except GlossaryError as exc:
            refuse(exc.status, str(exc))
        except TransformerMTError as exc:  # the entries' own problem
            refuse(400, str(exc))
        return kept.info()

    @app.get("/v1/glossaries", summary="The glossaries kept (without their entries)")
    async def list_glossaries(api_key: str | None = None):
        check_api_key(api_key)
        return {"glossaries": [g.info() for g in store.all()]}

    @app.get("/v1/glossaries/{glossary_id}", summary="One glossary, with its entries")
    async def get_glossary(glossary_id: str, api_key: str | None = None):
        check_api_key(api_key)
        kept = stored(glossary_id)
        return {**kept.info(), "entries": [list(entry) for entry in kept.glossary.entries]}

    @app.delete("/v1/glossaries/{glossary_id}", status_code=204, summary="Forget a glossary")
    async def delete_glossary(glossary_id: str, api_key: str | None = None):
        check_api_key(api_key)
        try:
            store.remove(glossary_id)
        except GlossaryError as exc:
            refuse(exc.status, str(exc))
        return Response(status_code=204)
