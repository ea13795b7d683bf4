"""LibreTranslate's API, answered as LibreTranslate answers, so that its clients work unchanged.

Mastodon, Discourse's translator plugin, Nextcloud's LibreTranslate integration, Misskey's forks and the
``libretranslatepy`` package were read for what they send and what they read back (tests/test_clients.py
replays them):

- ``POST /translate``: JSON, a urlencoded or a multipart form (and, for forms, fields in the query string,
  as LibreTranslate's ``request.values`` reads them); ``q`` a string or a list; ``format`` ``text`` or
  ``html``; ``alternatives``; ``source`` ``auto`` or the served source. Each ``q`` is split into sentences
  (``text/segment.py``, ``text/html.py``), all the sentences of a request go to the batcher in one go, and
  the translations are joined back with the text's line breaks, paragraphs and markup. ``detectedLanguage``
  comes with ``source: "auto"``, one object for a string and a list for a list (LibreTranslate detects once
  for the whole request and repeats it).
- ``source: "auto"`` with text that the language identifier is sure is another language than the served
  source (when that is a code it knows): a 400 that names the language and this server's pair, rather than a
  confident translation of text the model never learnt to read.
- ``POST /detect``: ``[{"confidence": 0-100, "language": code}, ...]``, best first (``text/language_id.py``).
- ``GET /languages`` (the source with its ``targets``, then the target, so clients that look a target up
  among the codes find it), ``GET /frontend/settings``, ``POST /suggest`` (403: suggestions are off).
- ``POST /translate_file`` (multipart: ``file``, ``source``, ``target``) for .txt, .html, .srt and .docx
  (``text/documents.py``) answers ``{"translatedFileUrl": ...}``; ``GET /download_file/<id>`` sends the file
  (``uploads.py`` keeps them).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from functools import partial
from urllib.parse import parse_qs, quote

import python_multipart
from fastapi import FastAPI, Request
from fastapi.responses import Response
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartState

from ..config import parse_whole_number
from ..decoding.paragraphs import HTML_ALIGNMENT, html_word_pairs
from ..errors import TransformerMTError
from ..text import language_id
from ..text.documents import MEDIA_TYPES, DocumentTooLarge, document_extension, segment_document
from ..text.glossary import Glossary
from ..text.html import segment_html
from ..text.segment import segment_text
from .batching import DecodeOptions
from .glossaries import GlossaryError, GlossaryStore
from .limits import ApiError, ServeLimits, read_body
from .registry import ModelRegistry, Route
from .uploads import TranslatedFiles, safe_download_name

# Names of common language codes for /languages and messages; other codes are shown as they are.
LANGUAGE_NAMES = {
    "ar": "Arabic", "cs": "Czech", "da": "Danish", "de": "German", "el": "Greek", "en": "English", "es": "Spanish",
    "et": "Estonian", "fi": "Finnish", "fr": "French", "hi": "Hindi", "hu": "Hungarian", "it": "Italian",
    "ja": "Japanese", "ko": "Korean", "lb": "Luxembourgish", "lt": "Lithuanian", "lv": "Latvian", "nl": "Dutch",
    "pl": "Polish", "pt": "Portuguese", "ro": "Romanian", "ru": "Russian", "sk": "Slovak", "sl": "Slovenian",
    "sv": "Swedish", "tr": "Turkish", "uk": "Ukrainian", "vi": "Vietnamese", "zh": "Chinese",
}
# LibreTranslate's codes for what its clients may also call by a BCP 47 tag (it lower-cases codes too).
CODE_ALIASES = {"zh-hans": "zh", "zh-cn": "zh", "zh-hant": "zt", "zh-tw": "zt", "pt-br": "pb"}
# A detection at least this sure of another language than the served one refuses source "auto" (see the
# module's docstring). On 7,000 test sentences of ../shared/data (de, en, fr, cs, zh) no wrong detection
# reached 0.9; the misses (Czech as Slovak, headlines) stayed below 0.7.
CONFIDENT = 0.9
# What /frontend/settings lists (.htm is read as .html).
FILE_FORMATS = [".txt", ".html", ".srt", ".docx", ".pptx", ".odt", ".odp", ".epub"]
# The alignment unit that decoding/paragraphs.py's html_word_pairs turns into the word pairs of text/html.py.
TAG_ALIGNMENT = HTML_ALIGNMENT["alignment_unit"]


def language_name(code: str) -> str:
    return LANGUAGE_NAMES.get(code, code)


def normalized_code(code) -> str | None:
    """A language field as LibreTranslate reads it: lower case, its aliases resolved; None if not a string."""
    if not isinstance(code, str):
        return None
    code = code.strip().lower()
    return CODE_ALIASES.get(code, code)


@dataclass
class Service:
    """What the routes need from the server (server.py's create_app builds it; its /v1/translate uses it too)."""

    source: str
    target: str
    # A multilingual model (OPUS-MT's >>fra<< tokens) translates into each of these and the client's 'target'
    # picks one; a one-pair model has [target] and multilingual False.
    targets: list[str]
    multilingual: bool
    limits: ServeLimits
    default_beam: int
    default_penalty: float
    split_sentences: bool
    aligns: bool  # the translator gives word alignments (inline HTML tags and Word formats are placed by them)
    keys_required: bool
    check_api_key: Callable[[object], None]
    check_texts: Callable[[object], list[str]]
    # decode(route, sentences, options, prefixes, constraints); for_pair binds the route.
    decode: Callable[..., Awaitable[list]]
    files: Callable[[], TranslatedFiles]  # the store of translated files, made when the app starts
    registry: ModelRegistry
    glossaries: GlossaryStore = field(default_factory=GlossaryStore)  # POST /v1/glossaries keeps them
    route: Route | None = None  # set on the Service of one request's pair (for_pair)

    @property
    def many(self) -> bool:
        return self.registry.many

    def for_pair(self, source: str, target: str) -> Service:
        """The Service of one request: ``source`` -> ``target`` (checked by check_pair), its model's defaults,
        and ``decode(sentences, options, prefixes, constraints)`` along its route."""
        route = self.registry.route(source, target)
        if route is None:
            raise ApiError(400, f"this server does not translate {source} -> {target}; it translates "
                                f"{shown_list(self.registry.pairs())}; see GET /languages")
        decode = partial(self.decode, route)
        if not self.many:  # the one model's settings, as create_app made them
            return replace(self, target=route.target, decode=decode, route=route)
        first, last = route.first, route.last
        return replace(self, source=route.source, target=route.target, targets=[route.target], multilingual=False,
                       default_beam=last.beam_size, default_penalty=last.length_penalty,
                       split_sentences=first.split_sentences, aligns=route.pivot is None and first.aligns,
                       decode=decode, route=route)


def shown_list(items: list[str], most: int = 20) -> str:
    return ", ".join(items[:most]) + (f", ... ({len(items)} in all)" if len(items) > most else "")


def refuse_pivot(service: Service, what: str) -> None:
    """A 400 for what a pivoted pair does not do (HTML, documents, alignments: they need one model's word
    alignment to the source)."""
    route = service.route
    if route is not None and route.pivot is not None:
        raise ApiError(400, f"{route.source} -> {route.target} is translated through {route.pivot} (no model "
                            f"translates it directly); {what} is translated only by a direct model: use format "
                            f"'text', or translate {route.source} -> {route.pivot} and {route.pivot} -> "
                            f"{route.target} yourself")


def refuse_inline_glossary(fields: dict) -> None:
    """LibreTranslate's routes take a kept glossary by ``glossary_id`` only; a ``glossary`` field (entries, as
    /v1/translate takes them) would otherwise be ignored like any unknown field, and the terms silently lost."""
    if "glossary" in fields:
        raise ApiError(400, "this route takes a glossary by 'glossary_id' (keep one with POST /v1/glossaries), not "
                            "its entries in 'glossary': send those to /v1/translate, which takes them")


def request_glossary(service: Service, glossary_id) -> Glossary | None:
    """The glossary a request names by ``glossary_id`` (None: none named), or a 404."""
    if glossary_id is None or glossary_id == "":
        return None
    try:
        stored = service.glossaries.get(glossary_id)
    except GlossaryError as exc:
        raise ApiError(exc.status, str(exc)) from None
    if (stored.source.lower(), stored.target.lower()) != (service.source.lower(), service.target.lower()):
        raise ApiError(400, f"glossary {glossary_id} is for {stored.source} -> {stored.target}, but this request "
                            f"translates {service.source} -> {service.target}")
    return stored.glossary


# ---------------------------------------------------------------------------------------------- request bodies

def _form_fields(pairs: dict[str, list[str]]) -> dict:
    """One value per field as LibreTranslate reads a form, except ``q``, which may repeat (a list)."""
    return {key: values if key == "q" and len(values) > 1 else values[0] for key, values in pairs.items()}


def _parse_multipart(content_type: str, body: bytes) -> tuple[dict, dict]:
    """A multipart/form-data body (what ``curl -F`` and browsers' FormData send): its text fields and its files
    as {field: (client's file name, bytes)}."""
    fields: dict[str, list[str]] = {}
    files: dict[str, tuple[str, bytes]] = {}

    def on_field(field) -> None:
        if field.field_name is None:  # older python-multipart versions let a nameless part through
            raise ApiError(400, "a part of the multipart form has no name")
        fields.setdefault(field.field_name.decode("utf-8"), []).append((field.value or b"").decode("utf-8"))

    def on_file(file) -> None:
        name = (file.field_name or b"").decode("utf-8", "replace")
        file.file_object.seek(0)
        # In memory (MAX_MEMORY_FILE_SIZE below), a part of the body, which read_body bounded.
        files[name] = ((file.file_name or b"").decode("utf-8", "replace"), file.file_object.read(len(body)))

    headers = {"Content-Type": content_type.encode("latin-1"), "Content-Length": str(len(body)).encode()}
    try:
        # A part in a transfer encoding other than 7bit/8bit/binary/base64/quoted-printable is an error, not
        # raw bytes passed on; files stay in memory (the whole body already is, within its limit), never in a
        # temporary file of python-multipart's choosing.
        parser = python_multipart.create_form_parser(
            headers, on_field, on_file,
            config={"UPLOAD_ERROR_ON_BAD_CTE": True, "MAX_MEMORY_FILE_SIZE": len(body) + 1})
        parser.write(body)
        parser.finalize()
    except UnicodeError:
        raise ApiError(400, "a field of the multipart form is not valid UTF-8") from None
    except (FormParserError, ValueError) as exc:
        raise ApiError(400, f"the multipart form body is malformed ({exc})") from None
    # python-multipart's finalize does not check that the body reached its closing boundary: a body cut off
    # on the way would be taken as a form without its last fields (the API key, say) and refused for them.
    if getattr(getattr(parser, "parser", None), "state", MultipartState.END) != MultipartState.END:
        raise ApiError(400, "the multipart form body ends before its closing boundary (--BOUNDARY--): it was cut "
                            "off on the way; send the whole body")
    return _form_fields(fields), files


def parse_body(request: Request, body: bytes, *, files_allowed: bool = False) -> tuple[dict, dict]:
    """The fields (and uploaded files) of a LibreTranslate request: JSON, or a form (urlencoded or multipart)
    with the query string's fields under it, as LibreTranslate's ``request.values`` reads them."""
    content_type = request.headers.get("content-type", "")
    media_type = content_type.split(";")[0].strip().lower()  # media types are case-insensitive
    query = _form_fields(parse_qs(request.url.query, keep_blank_values=True)) if request.url.query else {}
    files: dict = {}
    if media_type == "application/x-www-form-urlencoded" or (not body.strip() and media_type != "application/json"):
        try:
            # errors="strict": a %-escaped byte that is not UTF-8 is refused, not turned into U+FFFD.
            fields = _form_fields(parse_qs(body.decode("utf-8"), keep_blank_values=True, errors="strict"))
        except UnicodeDecodeError:
            raise ApiError(400, "the form body is not valid UTF-8") from None
    elif media_type == "multipart/form-data":
        fields, files = _parse_multipart(content_type, body)
        if files and not files_allowed:
            raise ApiError(400, f"file uploads are not accepted here (field {next(iter(files))!r}); send the "
                                f"text as the 'q' field, or the file to POST /translate_file")
    else:
        try:
            data = json.loads(body, parse_constant=_reject_constant)
        except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError is a ValueError
            raise ApiError(400, f"the body is not valid JSON ({exc}); send a JSON object such as "
                                f'{{"q": "text", "source": "auto", "target": "xx"}}') from None
        except RecursionError:
            raise ApiError(400, "the JSON body is nested too deeply") from None
        if not isinstance(data, dict):
            raise ApiError(400, "the JSON body must be an object with a 'q' field")
        return data, files  # LibreTranslate reads a JSON request's fields from the JSON alone
    return {**query, **fields}, files


def whole_number(value) -> int | None:
    """A whole number from JSON (2, 2.0) or a form ("2"), else None (1.5, 1e400, true, "two")."""
    if value is None or value == "":
        return 0
    if isinstance(value, bool):
        return None
    # Bounded (a JSON integer may have thousands of digits): the n-best limit refuses what is left too large.
    if isinstance(value, int):
        return value if abs(value) < 2**53 else None
    if isinstance(value, float):
        return int(value) if value.is_integer() and abs(value) < 2**53 else None  # inf and nan are not integers
    if isinstance(value, str) and len(value) < 20:
        return parse_whole_number(value)  # the digits 0-9, as on the command line ("²", "--5", "٣" are no counts)
    return None


def _reject_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


# ---------------------------------------------------------------------------------------------- translation

def segment(service: Service, text: str, text_format: str):
    """One text as sentences (and how to join their translations), or a 400 for malformed HTML."""
    try:
        if text_format == "html":
            return segment_html(text, service.source, split_sentences=service.split_sentences)
        return segment_text(text, service.source, split_sentences=service.split_sentences)
    except TransformerMTError as exc:
        raise ApiError(400, str(exc)) from None


def needs_alignment(service: Service, parts: list) -> bool:
    """Whether the translations of ``parts`` need word alignments: HTML (or a document) with inline tags, served
    by the PyTorch Translator (CTranslate2's are not exported: the tags then go by relative position)."""
    return service.aligns and any(getattr(part, "has_inline_tags", False) for part in parts)


async def translate_segments(service: Service, parts: list, nbest: int, aligned: bool,
                             target_language: str | None = None, glossary: Glossary | None = None) -> list[list[list]]:
    """Translate the sentences of all ``parts`` in one batcher request; per part, per sentence, its n-best
    (each with its word alignment when ``aligned``); ``target_language`` for a multilingual model; the terms of
    ``glossary`` found in each sentence kept in its translation."""
    sentences = [sentence for part in parts for sentence in part.sentences]
    options = DecodeOptions(max(service.default_beam, nbest), service.default_penalty, nbest,
                            TAG_ALIGNMENT if aligned else None, target_language=target_language)
    constraints = glossary.constraints(sentences) if glossary is not None else None
    results = await service.decode(sentences, options, None, constraints) if sentences else []
    out, start = [], 0
    for part in parts:
        out.append(results[start:start + len(part.sentences)])
        start += len(part.sentences)
    return out


def word_alignments(part, chosen: list, aligned: bool) -> list | None:
    """Per sentence, the word pairs of its chosen translation as text/html.py counts words; None (tags placed
    by relative position) when the translations carry no alignment."""
    if not aligned:
        return None
    return [html_word_pairs(sentence, result) for sentence, result in zip(part.sentences, chosen)]


def join_nbest(part, results: list[list], html: bool, aligned: bool, target: str, count: int) -> list[str]:
    """The text's translation and up to ``count - 1`` different alternatives: alternative k joins each
    sentence's k-th best translation (its best where it has fewer), as Argos Translate combines hypotheses."""
    joined: list[str] = []
    for k in range(count):
        chosen = [result[min(k, len(result) - 1)] for result in results]
        texts = [t.text for t in chosen]
        text = part.join(texts, word_alignments(part, chosen, aligned), target) if html else part.join(texts, target)
        if text not in joined:
            joined.append(text)
    return joined


async def detected_source(service: Service, text: str) -> dict:
    """``detectedLanguage`` for ``source: "auto"``, or a 400 when the text is surely another language."""
    known = (language_id.knows(service.source) if language_id.loaded()
             else await asyncio.to_thread(language_id.knows, service.source))  # the 2 s load off the event loop
    if not known:  # the demo's "src": nothing to compare with
        return {"confidence": 100.0, "language": service.source}
    ranked = await asyncio.to_thread(language_id.detect_languages, text, None)
    if not ranked:  # no language in it (digits, emoji): translated as the served source
        return {"confidence": 0.0, "language": service.source}
    best, probability = ranked[0]
    if best != service.source and probability >= CONFIDENT:
        raise ApiError(400, f"the text is in {language_name(best)} ({best}, detected with {probability:.0%} "
                            f"confidence), but this server translates {language_name(service.source)} "
                            f"({service.source}) -> {language_name(service.target)} ({service.target}) only; "
                            f"send \"source\": \"{service.source}\" to translate it anyway")
    return {"confidence": round(100 * dict(ranked).get(service.source, 0.0), 1), "language": service.source}


def check_pair(service: Service, source, target) -> tuple[str, str]:
    """The source ('auto' or a served source) and the target of a request, or a 400 naming the pairs there are
    (see check_one_pair for a single model's server, check_many_pairs for many models')."""
    return check_many_pairs(service, source, target) if service.many else check_one_pair(service, source, target)


def check_many_pairs(service: Service, source, target) -> tuple[str, str]:
    """For many models: the source ('auto' or a served source, as the server spells it) and the target; a
    missing target is the only one there is (from that source), else a 400 naming the choices."""
    registry = service.registry
    src = normalized_code(source if source is not None else "auto")
    sources = {code.lower(): code for code in registry.sources()}
    if src is None or (src != "auto" and src not in sources):
        raise ApiError(400, f"source {source!r:.40} is not a language this server translates from (it translates "
                            f"{shown_list(registry.pairs())}); see GET /languages")
    reachable = registry.targets_of(src) if src != "auto" else [t for s in sources for t in registry.targets_of(s)]
    targets = {code.lower(): code for code in reachable}
    tgt = normalized_code(target) if target is not None else "auto"
    if tgt is None:  # given, but no language code (a number, an object, ...)
        raise ApiError(400, f"'target' must be a language code such as \"en\", got {target!r:.40}; this server "
                            f"translates {shown_list(registry.pairs())}; see GET /languages")
    if tgt in ("auto", ""):
        if len(targets) != 1:
            raise ApiError(400, f"give 'target': this server translates {shown_list(registry.pairs())}; see GET "
                                f"/languages")
        tgt = next(iter(targets))
    if tgt not in targets:
        raise ApiError(400, f"this server does not translate {source if source is not None else 'auto'} -> "
                            f"{target!s:.40}; it translates {shown_list(registry.pairs())}; see GET /languages")
    return sources.get(src, "auto"), targets[tgt]


async def detected_among(service: Service, text: str, target: str) -> tuple[str, dict]:
    """For many models and ``source: "auto"``: the served source that ``text`` is most likely in, among those
    that translate into ``target``, with its ``detectedLanguage``; a 400 when the text is surely another
    language, or when nothing tells the candidates apart."""
    registry = service.registry
    candidates = [s for s in registry.sources() if target.lower() in {t.lower() for t in registry.targets_of(s)}]
    if not language_id.loaded():
        await asyncio.to_thread(language_id.load)  # the 2 s load off the event loop
    known = [code for code in candidates if language_id.knows(code.lower())]
    ranked = await asyncio.to_thread(language_id.detect_languages, text, None) if known else []
    if not ranked:
        if len(candidates) == 1:
            return candidates[0], {"confidence": 0.0, "language": candidates[0]}
        raise ApiError(400, f"the language of the text cannot be told among the sources that translate into "
                            f"{target} ({', '.join(candidates)}); send \"source\"")
    probabilities = dict(ranked)
    best, probability = ranked[0]
    if best not in {code.lower() for code in candidates} and probability >= CONFIDENT:
        raise ApiError(400, f"the text is in {language_name(best)} ({best}, detected with {probability:.0%} "
                            f"confidence), but this server translates into {language_name(target)} ({target}) only "
                            f"from {', '.join(candidates)}; send \"source\" to translate it anyway")
    chosen = max(known, key=lambda code: probabilities.get(code.lower(), 0.0))
    return chosen, {"confidence": round(100 * probabilities.get(chosen.lower(), 0.0), 1), "language": chosen}


async def pair_for(service: Service, src: str, target: str, texts: list[str], text_format: str
                   ) -> tuple[Service, dict | None]:
    """The Service of a request's pair; for many models and source 'auto', the detected source and its
    ``detectedLanguage`` (a one-model server detects after segmenting, in detected_source)."""
    if src != "auto":
        return service.for_pair(src, target), None
    if not service.many:
        return service.for_pair(service.source, target), None
    sentences = [s for text in texts for s in segment(service, text, text_format).sentences]
    source, detected = await detected_among(service, " ".join(sentences), target)
    return service.for_pair(source, target), detected


def check_one_pair(service: Service, source, target) -> tuple[str, str]:
    """The normalized source ('auto' or the served source) and the target language to translate into, or a
    400 naming what this server translates. A missing source is 'auto' and, for a one-pair model, a missing
    target the served one (LibreTranslate requires both; this server always took them as optional); a
    multilingual model needs its target named."""
    src = normalized_code(source if source is not None else "auto")
    if service.multilingual and (target is None or normalized_code(target) == "auto"):
        shown = ", ".join(service.targets[:20]) + (", ..." if len(service.targets) > 20 else "")
        raise ApiError(400, f"this model translates into {len(service.targets)} languages: give 'target' (one of "
                            f"{shown}); see GET /languages")
    tgt = normalized_code(target if target is not None else service.target)
    targets = {code.lower(): code for code in service.targets}
    if src not in ("auto", service.source.lower()) or (tgt not in targets and not (tgt == "auto" and
                                                                                   not service.multilingual)):
        raise ApiError(400, f"this server translates {service.source} -> {', '.join(service.targets[:20])} only "
                            f"(got source {source!r}, target {target!r}); see GET /languages")
    return src, targets.get(tgt, service.target)


def model_target(service: Service, target: str) -> str | None:
    """What the translator is told about the target language: a multilingual model's choice, else nothing."""
    return target if service.multilingual else None


def check_format(text_format) -> str:
    """'text' (also when left out: absent, null or "") or 'html'; anything else is refused (a falsy {}, 0, false
    or [] is no format either)."""
    if text_format is None or text_format == "":
        return "text"
    if not isinstance(text_format, str) or text_format not in ("text", "html"):
        raise ApiError(400, f"format {text_format!r:.40} is not supported; use 'text' or 'html'")
    return text_format


# ---------------------------------------------------------------------------------------------- routes

def add_libretranslate_routes(app: FastAPI, service: Service) -> None:
    add_translate_route(app, service)
    add_language_routes(app, service)
    add_file_routes(app, service)


def add_translate_route(app: FastAPI, service: Service) -> None:
    """POST /translate: texts (or HTML) split into sentences, translated in one go, joined back; alternatives."""
    limits = service.limits

    @app.post("/translate", summary="Translate (LibreTranslate-compatible)")
    async def translate(request: Request):
        fields, _ = parse_body(request, await read_body(request, limits.max_body_bytes))
        service.check_api_key(fields.get("api_key"))
        refuse_inline_glossary(fields)
        if "q" not in fields:
            raise ApiError(400, "missing 'q': the text to translate (a string or a list of strings)")
        texts = service.check_texts(fields["q"])
        src, target = check_pair(service, fields.get("source"), fields.get("target"))
        text_format = check_format(fields.get("format"))
        pair, detected = await pair_for(service, src, target, texts, text_format)
        if text_format == "html":
            refuse_pivot(pair, "HTML")
        glossary = request_glossary(pair, fields.get("glossary_id"))
        alternatives = whole_number(fields.get("alternatives", 0))
        if alternatives is None:
            raise ApiError(400, f"'alternatives' must be a whole number, got {fields.get('alternatives')!r:.40}")
        if alternatives < 0:
            raise ApiError(400, "'alternatives' must be 0 or more")
        nbest = alternatives + 1
        if nbest > limits.max_nbest:
            raise ApiError(400, f"{alternatives} alternatives are above this server's limits "
                                f"({limits.max_nbest - 1})")
        parts = [segment(pair, text, text_format) for text in texts]
        if src == "auto" and not service.many:
            detected = await detected_source(pair, " ".join(s for part in parts for s in part.sentences))
        aligned = text_format == "html" and needs_alignment(pair, parts)
        results = await translate_segments(pair, parts, nbest, aligned, model_target(pair, target), glossary)
        joined = [join_nbest(part, result, text_format == "html", aligned, target, nbest)
                  for part, result in zip(parts, results)]
        single = isinstance(fields["q"], str)
        answer = {"translatedText": joined[0][0] if single else [j[0] for j in joined]}
        if alternatives:
            answer["alternatives"] = joined[0][1:] if single else [j[1:] for j in joined]
        if detected is not None:
            answer["detectedLanguage"] = detected if single else [detected] * len(texts)
        return answer


def add_language_routes(app: FastAPI, service: Service) -> None:
    """POST /detect, GET /languages and /frontend/settings, and POST /suggest (off)."""
    limits = service.limits

    @app.post("/detect", summary="Detect the language of a text (LibreTranslate-compatible)")
    async def detect(request: Request):
        fields, _ = parse_body(request, await read_body(request, limits.max_body_bytes))
        service.check_api_key(fields.get("api_key"))
        if not fields.get("q"):
            raise ApiError(400, "missing 'q': the text whose language to detect")
        text = " ".join(service.check_texts(fields["q"]))
        ranked = await asyncio.to_thread(language_id.detect_languages, text, 3)
        if not ranked:  # LibreTranslate's answer for text with no language in it
            return [{"confidence": 0.0, "language": "en"}]
        return [{"confidence": round(100 * probability, 1), "language": code} for code, probability in ranked]

    @app.get("/languages", summary="Languages (LibreTranslate-compatible)")
    async def languages():
        if service.many:
            return many_languages(service.registry)
        entries = [{"code": service.source, "name": language_name(service.source), "targets": service.targets}]
        entries += [{"code": code, "name": language_name(code), "targets": []}
                    for code in service.targets if code != service.source]
        return entries

    @app.get("/frontend/settings", summary="Settings for LibreTranslate's web clients")
    async def frontend_settings():
        return {"charLimit": limits.max_chars_per_request, "frontendTimeout": 500,
                "apiKeys": service.keys_required, "keyRequired": service.keys_required, "suggestions": False,
                "filesTranslation": True, "supportedFilesFormat": FILE_FORMATS,
                "language": {"source": {"code": service.source, "name": language_name(service.source)},
                             "target": {"code": service.target, "name": language_name(service.target)}},
                **({"languages": many_languages(service.registry)} if service.many else {})}

    @app.post("/suggest", summary="Suggest a better translation (off on this server, as LibreTranslate's default)")
    async def suggest():
        raise ApiError(403, "Suggestions are disabled on this server.")


def many_languages(registry: ModelRegistry) -> list[dict]:
    """/languages of a server of many models: every source with all the targets it reaches (``pivoted``: those
    translated through another language, target -> that language), then the codes that are targets only."""
    entries = []
    for source in registry.sources():
        entry = {"code": source, "name": language_name(source), "targets": registry.targets_of(source)}
        pivots = registry.pivots_of(source)
        if pivots:
            entry["pivoted"] = pivots
        entries.append(entry)
    codes = {source.lower() for source in registry.sources()}
    for target in sorted({t for entry in entries for t in entry["targets"]}, key=str.lower):
        if target.lower() not in codes:
            codes.add(target.lower())
            entries.append({"code": target, "name": language_name(target), "targets": []})
    return entries


def add_file_routes(app: FastAPI, service: Service) -> None:
    """POST /translate_file (a document translated whole, kept for its download) and GET /download_file/<id>."""
    limits = service.limits

    @app.post("/translate_file", summary=f"Translate a {', '.join(FILE_FORMATS)} file (LibreTranslate-compatible)")
    async def translate_file(request: Request):
        # The form around the file (boundaries, other fields) gets 64 KiB on top of the file's own limit.
        body = await read_body(request, limits.max_file_bytes + 65536)
        fields, files = parse_body(request, body, files_allowed=True)
        service.check_api_key(fields.get("api_key"))
        refuse_inline_glossary(fields)
        if "file" not in files:
            raise ApiError(400, "missing 'file': send the document as the multipart form field 'file'")
        filename, data = files["file"]
        if not filename:
            raise ApiError(400, "the uploaded 'file' has no file name; its extension says its type "
                                f"({', '.join(FILE_FORMATS)})")
        if len(data) > limits.max_file_bytes:
            raise ApiError(413, f"the file has {len(data)} bytes; the limit is {limits.max_file_bytes} "
                                f"(max_file_bytes)")
        src, target = check_pair(service, fields.get("source"), fields.get("target"))
        pair = None if src == "auto" and service.many else \
            service.for_pair(service.source if src == "auto" else src, target)
        if pair is not None:
            refuse_pivot(pair, "a document")
            glossary = request_glossary(pair, fields.get("glossary_id"))
        try:
            extension = document_extension(filename)
            document = await asyncio.to_thread(segment_document, data, filename,
                                               (pair or service).source, (pair or service).split_sentences,
                                               limits.max_file_chars)
        except DocumentTooLarge as exc:
            raise ApiError(413, f"{exc} (max_file_chars {limits.max_file_chars})") from None
        except TransformerMTError as exc:
            raise ApiError(400, str(exc)) from None
        characters = sum(len(sentence) for sentence in document.sentences)
        if characters > limits.max_file_chars:
            raise ApiError(413, f"the file holds {characters} characters of text; the limit is "
                                f"{limits.max_file_chars} (max_file_chars): split it into smaller files")
        if pair is None:  # many models, source "auto": the document's sentences tell its language
            detected, _ = await detected_among(service, " ".join(document.sentences), target)
            pair = service.for_pair(detected, target)
            refuse_pivot(pair, "a document")
            glossary = request_glossary(pair, fields.get("glossary_id"))
            if pair.source != service.source or pair.split_sentences != service.split_sentences:
                document = await asyncio.to_thread(segment_document, data, filename, pair.source,
                                                   pair.split_sentences, limits.max_file_chars)
        elif src == "auto":
            await detected_source(pair, " ".join(document.sentences))
        aligned = needs_alignment(pair, [document])
        results = await translate_segments(pair, [document], 1, aligned, model_target(pair, target), glossary)
        best = [result[0] for result in results[0]]
        translated = await asyncio.to_thread(document.join, [t.text for t in best],
                                             word_alignments(document, best, aligned), target)
        download_id = service.files().put(translated, safe_download_name(filename, extension),
                                          MEDIA_TYPES[extension])
        return {"translatedFileUrl": f"{str(request.base_url).rstrip('/')}/download_file/{quote(download_id)}"}

    @app.get("/download_file/{download_id}", summary="Download a file translated by POST /translate_file")
    async def download_file(download_id: str):
        stored = service.files().get(download_id)
        if stored is None:
            raise ApiError(404, f"no translated file {download_id!r}: it was never made here, or it was removed "
                                f"{service.files().ttl_s / 60:g} minutes after its translation")
        data, name, media_type = stored
        return Response(data, media_type=media_type,
                        headers={"Content-Disposition": f"attachment; filename=\"{name}\"; "
                                                        f"filename*=utf-8''{quote(name)}"})
