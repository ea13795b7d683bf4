"""``transformer-mt serve``: a trained model behind a REST API.

    transformer-mt serve --model runs/demo --port 5000

Endpoints (OpenAPI docs at ``/docs``):

- LibreTranslate's API, so its clients (Mastodon, Discourse, Nextcloud, Misskey's forks, libretranslatepy)
  work unchanged: ``POST /translate``, ``/detect``, ``/translate_file``, ``/suggest``, ``GET /languages``,
  ``/frontend/settings``, ``/download_file/<id>`` (see ``libretranslate.py``). Errors are
  ``{"error": "..."}`` with status 400, 403, 404, 413 or 503.
- ``POST /v1/translate``: the native API, with beam size, length penalty,
  n-best, scores, ``format`` (``text`` or ``html``) and, on request, alignments to the source; sampling
  (``temperature``, ``top_k``, ``top_p``, ``seed``; ``nbest`` samples), ``no_repeat_ngram_size``,
  ``repetition_penalty`` and a target ``prefix`` per text (decoding/logits.py).
- ``GET /health`` (200 once the model is loaded) and ``GET /v1/info``.
- ``GET /``: a web page to type or paste text (or HTML) and read its translation (it uses
  ``/languages`` and ``/translate`` like any client).

Each text is split into sentences (``text/segment.py``; HTML with ``text/html.py``), the sentences of all
texts of a request are decoded in one go and their translations joined back, so paragraphs, line breaks and
markup come back where they were. Concurrent requests are decoded together (see ``batching.py``); decoding
runs in a worker thread, so ``/health`` answers while a batch decodes. Models are loaded only through the safe
checkpoint loader. Limits on the body size, the texts per request, the characters per text and per request,
and the size of uploaded files keep one request from taking the server.
"""

from __future__ import annotations

import asyncio
import json
import threading
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, Field, StrictBool, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..decoding.logits import search_options
from ..decoding.translator import MAX_LENGTH_PENALTY, Translator
from ..errors import TransformerMTError
from ..text import language_id
from ..text.glossary import Glossary
from .batching import DecodeOptions
from .glossaries import add_glossary_routes
from .libretranslate import (
    TAG_ALIGNMENT,
    Service,
    add_libretranslate_routes,
    check_pair,
    many_languages,
    needs_alignment,
    pair_for,
    refuse_pivot,
    request_glossary,
    segment,
    word_alignments,
)
from .limits import ApiError, ApiKeys, ServeLimits, check_texts, read_body
from .registry import ModelRegistry, describe_translator
from .uploads import TranslatedFiles


class NativeRequest(BaseModel):
    """Body of POST /v1/translate."""

    text: str | list[str] = Field(description="a text or a list of texts; each is split into sentences, "
                                                "translated, and joined back with its line breaks")
    format: Literal["text", "html"] = Field("text", description="'html': each text is an HTML document or "
                                                                "fragment; its markup comes back around the "
                                                                "translated words")
    beam_size: int | None = Field(None, ge=1, description="default: the model's decoding.beam_size")
    length_penalty: float | None = Field(None, ge=-MAX_LENGTH_PENALTY, le=MAX_LENGTH_PENALTY, allow_inf_nan=False,
                                         description="GNMT alpha")
    nbest: int = Field(1, ge=1, description="translations per sentence, best first")
    alignment: StrictBool | Literal["pieces", "words"] = Field(  # strict: "yes" is no boolean
        False, description="true or 'pieces': each translation also gets 'alignment', pairs [i, j] (source "
                           "piece i aligned to target piece j, from 0), with 'source_tokens' and 'target_tokens'; "
                           "'words': the same for words")
    alignment_layer: int | None = Field(None, ge=1, description="decoder layer of the alignment, from 1 "
                                                                "(default: the penultimate)")
    api_key: str | None = Field(None, description="needed when the server was started with --api-key-file")
    # Issue 27 (decoding/logits.py); values are checked by logits.search_options (400 with its message).
    temperature: float | None = Field(None, allow_inf_nan=False, description="sampling: temperature, 0 or 1e-30 to 1e30 (given "
                                      "temperature, top_k or top_p, each token is drawn, no beam; nbest = samples)")
    top_k: int | None = Field(None, description="sampling among the k most probable tokens (0 = all)")
    top_p: float | None = Field(None, allow_inf_nan=False, description="nucleus sampling, 1e-30 to 1")
    seed: int | None = Field(None, description="seed of the sampling (the same seed and batch: the same samples)")
    no_repeat_ngram_size: int | None = Field(None, description="no n-gram of this many tokens twice (0 = off)")
    repetition_penalty: float | None = Field(None, allow_inf_nan=False,
                                             description="repeated tokens' log-probabilities times this (1 = off)")
    prefix: str | list[str] | None = Field(None, description="what the translation of each text starts with: one "
                                                             "string for all texts, or one per text (format text)")
    glossary: list[list[str]] | None = Field(None, description="terms to keep: [[source term, target term], ...]; "
                                                               "in each sentence holding a source term (whole "
                                                               "words, any case) the target term is kept")
    glossary_id: str | None = Field(None, description="a glossary kept with POST /v1/glossaries")
    source: str | None = Field(None, description="the language of the texts; 'auto' detects it among the served "
                                                 "sources (default: the only source, when there is one)")
    target: str | None = Field(None, description="the language to translate into (default: the only target, when "
                                                 "there is one); see GET /languages")


def create_app(translator: Translator | ModelRegistry, *, limits: ServeLimits | None = None,
               max_batch_sentences: int = 64, max_wait_ms: float = 2.0, max_queue_sentences: int = 2048,
               api_keys: set[str] | None = None, info: dict | None = None, split_sentences: bool | None = None,
               file_ttl_s: float = 1800.0, cors_origins: list[str] | None = None) -> FastAPI:
    """The FastAPI application serving ``translator`` (uvicorn runs it; tests call it with a client), or the
    models of a ``ModelRegistry`` (``serve --models-dir``; registry.py): each request goes to its pair's model.

    ``split_sentences``: cut each text into sentences (default: the config's ``decoding.split_sentences``);
    ``file_ttl_s``: how long a translated file waits for its download; ``cors_origins``: web origins
    (``https://example.org``, or ``*``) whose pages may call the API from a browser; None (the default)
    sends no CORS headers, so browsers keep other sites' pages out.
    """
    limits = limits or ServeLimits()
    if isinstance(translator, ModelRegistry):
        registry = translator
    else:  # one model: a registry of one, already loaded
        registry = ModelRegistry.of_one(translator, describe_translator(translator, "model", split_sentences))
    first = registry.models[0]
    batching = {"max_batch_sentences": max_batch_sentences, "max_wait_ms": max_wait_ms,
                "max_queue_sentences": max_queue_sentences}
    running = Running(registry)
    described = (f"Translation {first.source} -> {first.targets[0]} with a transformer-mt model." if not registry.many
                 else f"Translation with {len(registry.models)} transformer-mt models: {', '.join(registry.pairs())}.")
    app = FastAPI(title="transformer-mt", version="0.1.0", lifespan=lifespan(running, batching, file_ttl_s),
                  description=described)

    if cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Content-Type", "Authorization"])
    add_error_handlers(app)

    keys = ApiKeys(api_keys)
    # A multilingual model (OPUS-MT's >>fra<< tokens) translates into each of its languages.
    service = Service(source=first.source, target=registry.targets_of(first.source)[0] if registry.many
                      else first.config_target or first.targets[0],
                      targets=first.targets, multilingual=first.multilingual, limits=limits,
                      default_beam=first.beam_size, default_penalty=first.length_penalty,
                      split_sentences=first.split_sentences, aligns=first.aligns, keys_required=keys.required,
                      check_api_key=keys.check, check_texts=lambda q: check_texts(q, limits),
                      decode=registry_decode(registry, limits), files=lambda: running.files, registry=registry)
    add_libretranslate_routes(app, service)
    add_native_routes(app, service)
    add_glossary_routes(app, service.glossaries, pair_problem=lambda source, target: glossary_pair_problem(
                            service, source, target),
                        read_json=lambda request: read_json(request, limits), check_api_key=keys.check,
                        refuse=refuse)
    add_page_and_info_routes(app, service, running, info, batching)
    return app


def glossary_pair_problem(service: Service, source, target) -> str | None:
    """Why a glossary for ``source`` -> ``target`` cannot be kept here (a pair this server does not translate)."""
    if not service.many:
        if source != service.source or target not in service.targets:
            return (f"this server translates {service.source} -> {', '.join(service.targets)}; a glossary for it "
                    f"has \"source\": \"{service.source}\" and \"target\": one of those")
        return None
    if not isinstance(source, str) or not isinstance(target, str) or service.registry.route(source, target) is None:
        return (f"this server translates {', '.join(service.registry.pairs()[:20])}; a glossary has the \"source\" "
                f"and \"target\" of one of those pairs")
    return None


@dataclass
class Running:
    """What the app holds while it serves: the models (their batchers are made when it starts) and the store of
    translated files."""

    registry: ModelRegistry
    files: TranslatedFiles | None = None


def lifespan(running: Running, batching: dict, file_ttl_s: float):
    """The app's lifespan: the models' batchers (and their decoding threads) and the translated files' store
    while it serves, the language identifier loaded in the background; what is queued is finished when it stops."""

    async def remove_old_files(files: TranslatedFiles) -> None:
        while True:
            await asyncio.sleep(min(60.0, file_ttl_s))
            await asyncio.to_thread(files.purge)

    @asynccontextmanager
    async def serving(app: FastAPI):
        running.registry.start(batching["max_batch_sentences"], batching["max_wait_ms"],
                               batching["max_queue_sentences"])
        running.files = TranslatedFiles(ttl_s=file_ttl_s)
        app.state.registry = running.registry
        # The language identifier takes 2 s to load: in the background, not in the first /detect.
        threading.Thread(target=language_id.load, name="transformer-mt-language-id", daemon=True).start()
        cleaner = asyncio.create_task(remove_old_files(running.files))
        try:
            yield
        finally:
            cleaner.cancel()
            # Uvicorn has stopped taking requests and waited for the open ones; finish what is queued.
            await asyncio.to_thread(running.registry.close)
            running.files.close()

    return serving


def registry_decode(registry: ModelRegistry, limits: ServeLimits):
    """Service.decode: a request's sentences to its route's batchers, within the search limits; their refusals
    as answers (registry.py)."""

    async def decode(route, sentences: list[str], options: DecodeOptions, prefixes: list[str] | None = None,
                     constraints: list[list[str]] | None = None):
        if options.beam_size > limits.max_beam_size or options.nbest > limits.max_nbest:
            raise ApiError(400, f"beam size {options.beam_size} / n-best {options.nbest} above this server's "
                                f"limits ({limits.max_beam_size} / {limits.max_nbest})")
        return await registry.decode(route, sentences, options, prefixes, constraints)

    return decode


def add_error_handlers(app: FastAPI) -> None:
    """Every error as ``{"error": ...}``: ours (ApiError), invalid requests (422), HTTP errors, and bugs (500)."""

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError):
        return JSONResponse({"error": exc.message}, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError):
        errors = exc.errors()
        # pydantic's JSON parser refuses a lone surrogate escape ("\\ud800", valid JSON but no text) as "unexpected
        # end of hex escape": say what it is, as the routes that read their JSON themselves do (a 400).
        if any(e.get("type") == "json_invalid" and "hex escape" in str(e.get("msg")) for e in errors):
            return JSONResponse({"error": "the body holds a \\u escape that is no text (a lone surrogate such as "
                                          "\\ud800, or fewer than four hex digits); send valid Unicode text"},
                                status_code=400)
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in errors)
        return JSONResponse({"error": f"invalid request: {problems}"}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):  # 404, 405, ...: the same JSON shape
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception):
        return JSONResponse({"error": f"internal error ({type(exc).__name__}); see the server log"}, status_code=500)


# ---------------------------------------------------------------------------------------------- POST /v1/translate

SEARCH_FIELDS = ("temperature", "top_k", "top_p", "seed", "no_repeat_ngram_size", "repetition_penalty")


def native_search(service: Service, request: NativeRequest) -> tuple[int, float, str | None, dict]:
    """The beam size, length penalty, alignment ('pieces', 'words' or None) and search options of a native
    request, or a 400 naming what does not go together."""
    search = {name: getattr(request, name) for name in SEARCH_FIELDS}
    try:
        sampling = search_options(**search).sampling  # checked here: a 400 naming the option
    except TransformerMTError as exc:
        raise ApiError(400, str(exc)) from None
    if sampling:
        if request.beam_size not in (None, 1):
            raise ApiError(400, "sampling (temperature, top_k, top_p) draws each token instead of searching with "
                                "a beam: leave out beam_size")
        beam = 1  # nbest is the number of samples
    else:
        beam = request.beam_size or max(service.default_beam, request.nbest)
        if request.nbest > beam:
            raise ApiError(400, f"nbest ({request.nbest}) cannot exceed beam_size ({beam})")
    penalty = service.default_penalty if request.length_penalty is None else request.length_penalty
    alignment = "pieces" if request.alignment is True else request.alignment or None
    if request.alignment_layer is not None and alignment is None:
        raise ApiError(400, "'alignment_layer' chooses the layer of an alignment; add \"alignment\": true")
    if request.format == "html" and alignment is not None:
        raise ApiError(400, "'alignment' is for format 'text'; with format 'html' the alignment places the "
                            "markup in the translation")
    return beam, penalty, alignment, search


def sentence_prefixes(request: NativeRequest, texts: list[str], parts: list) -> list[str] | None:
    """Each sentence's target prefix: a text's translation starts with its first sentence's."""
    if request.prefix is None:
        return None
    if request.format == "html":
        raise ApiError(400, "'prefix' is for format 'text': an HTML translation starts with its markup")
    text_prefixes = [request.prefix] * len(texts) if isinstance(request.prefix, str) else request.prefix
    if len(text_prefixes) != len(texts):
        raise ApiError(400, f"'prefix': {len(text_prefixes)} prefixes for {len(texts)} texts; give one per "
                            f"text (\"\" for none) or one string for all")
    return [p if k == 0 else "" for part, p in zip(parts, text_prefixes) for k in range(len(part.sentences))]


def native_glossary(service: Service, request: NativeRequest) -> Glossary | None:
    """The request's glossary: its entries (``glossary``) or a kept one (``glossary_id``), not both."""
    if request.glossary is not None and request.glossary_id is not None:
        raise ApiError(400, "give 'glossary' (the entries) or 'glossary_id' (a kept glossary), not both")
    if request.glossary is None:
        return request_glossary(service, request.glossary_id)
    try:
        return Glossary.from_entries(request.glossary, "'glossary'")
    except TransformerMTError as exc:
        raise ApiError(400, str(exc)) from None


async def read_json(request: Request, limits: ServeLimits):
    """A JSON body within the body limit, or a 400."""
    try:
        return json.loads(await read_body(request, limits.max_body_bytes))
    except (ValueError, RecursionError):
        raise ApiError(400, "the body must be JSON (Content-Type: application/json)") from None


def refuse(status: int, message: str):
    raise ApiError(status, message)


def native_translation(part, chosen: list, html: bool, aligned: bool, alignment: str | None, target: str) -> dict:
    """Translation k of a text: each sentence's k-th best (``chosen``), joined; its score the sentences' mean."""
    texts = [t.text for t in chosen]
    text = part.join(texts, word_alignments(part, chosen, aligned), target) if html else part.join(texts, target)
    result = {"text": text, "score": sum(t.score for t in chosen) / len(chosen) if chosen else 0.0}
    if alignment is not None:  # the sentences' tokens one after the other, the pairs shifted to match
        pairs, source_tokens, target_tokens = [], [], []
        for t in chosen:
            pairs += [[i + len(source_tokens), j + len(target_tokens)] for i, j in t.alignment]
            source_tokens += t.source_tokens
            target_tokens += t.target_tokens
        result.update(alignment=pairs, source_tokens=source_tokens, target_tokens=target_tokens)
    return result


def check_native_pair(service: Service, request: NativeRequest) -> tuple[str, str]:
    """The pair of a native request: ``source`` (absent: the only source there is, 'auto': detected) and
    ``target`` (absent: the only target there is), or a 400 naming the choices."""
    source = request.source
    if source is None:
        sources = service.registry.sources()
        if len(sources) > 1:
            raise ApiError(400, f"give 'source' (or \"auto\"): this server translates "
                                f"{', '.join(service.registry.pairs()[:20])}; see GET /languages")
        source = sources[0]
    src, target = check_pair(service, source, request.target)
    return src, target


def add_native_routes(app: FastAPI, base: Service) -> None:
    """POST /v1/translate: decoding options, scores, n-best and alignments (NativeRequest)."""

    @app.post("/v1/translate", summary="Translate with decoding options and scores", openapi_extra={
        "requestBody": {"required": True, "content": {"application/json": {"schema": NativeRequest.model_json_schema()}}}})
    async def translate_native(http_request: Request):
        body = await read_body(http_request, base.limits.max_body_bytes)
        try:
            request = NativeRequest.model_validate_json(body)
        except ValidationError as exc:
            raise RequestValidationError(exc.errors(include_url=False, include_context=False)) from None
        base.check_api_key(request.api_key)
        texts = base.check_texts(request.text)
        src, target = check_native_pair(base, request)
        service, detected = await pair_for(base, src, target, texts, request.format)
        if request.format == "html":
            refuse_pivot(service, "HTML")
        if request.alignment:
            refuse_pivot(service, "a translation with alignments")
        beam, penalty, alignment, search = native_search(service, request)
        html = request.format == "html"
        parts = [segment(service, text, request.format) for text in texts]
        sentences = [sentence for part in parts for sentence in part.sentences]
        prefixes = sentence_prefixes(request, texts, parts)
        glossary = await asyncio.to_thread(native_glossary, service, request)  # a big glossary takes a moment
        constraints = glossary.constraints(sentences) if glossary is not None else None
        aligned = html and needs_alignment(service, parts)
        options = DecodeOptions(beam, penalty, request.nbest, TAG_ALIGNMENT if aligned else alignment,
                                request.alignment_layer, **{k: v for k, v in search.items() if v is not None})
        results = await service.decode(sentences, options, prefixes, constraints) if sentences else []
        translations, start = [], 0
        for part in parts:
            mine = results[start:start + len(part.sentences)]
            start += len(part.sentences)
            translations.append([native_translation(part, [r[min(k, len(r) - 1)] for r in mine], html, aligned,
                                                    alignment, service.target) for k in range(request.nbest)])
        answer = {"translations": translations,
                  "source": service.source, "target": service.target, "beam_size": beam, "length_penalty": penalty}
        if detected is not None:
            answer["detected_language"] = detected
        if service.route.pivot is not None:
            answer["pivot"] = service.route.pivot
        return answer


# ---------------------------------------------------------------------------------------------- page, health, info

def add_page_and_info_routes(app: FastAPI, service: Service, running: Running, info: dict | None,
                             batching: dict) -> None:
    """GET / (the web page), /health and /v1/info (the served model and the server's settings)."""

    @app.get("/", include_in_schema=False)
    async def web_page():
        return FileResponse(Path(__file__).with_name("static") / "index.html", media_type="text/html")

    @app.get("/health", summary="200 once the model is loaded")
    async def health():
        return {"status": "ok"}

    @app.get("/v1/info", summary="The served model and the server's settings")
    async def server_info(api_key: str | None = None):
        service.check_api_key(api_key)  # as a query parameter: /v1/info?api_key=...
        registry = running.registry
        sizes, batchers = registry.batch_sizes(), registry.batchers()
        answer = {**(info or {}), "source": service.source, "target": service.target,
                  "beam_size": service.default_beam, "length_penalty": service.default_penalty,
                  "limits": asdict(service.limits),
                  "batching": {**batching, "batches_decoded": len(sizes), "sentences_decoded": sum(sizes),
                               "sentences_waiting": sum(b.queued_sentences for b in batchers),
                               "sentences_decoding": sum(b.decoding_sentences for b in batchers)}}
        if registry.many:
            answer.update(models=registry.info(), pairs=registry.pairs(), max_loaded_models=registry.max_loaded,
                          languages=many_languages(registry))
        return answer
