"""``transformer-mt serve``: a trained model behind a REST API.

    transformer-mt serve --model runs/demo --port 5000

Endpoints (OpenAPI docs at ``/docs``):

- ``POST /translate``: LibreTranslate's API, so its clients work unchanged. JSON
  or form body (urlencoded or multipart) with ``q`` (a string or a list of strings), ``source``,
  ``target`` (``auto`` accepted), optional ``format`` (``text``),
  ``alternatives`` (extra n-best translations) and ``api_key``; answers
  ``{"translatedText": ..., "alternatives": ...}``; errors are
  ``{"error": "..."}`` with status 400, 403, 413 or 503.
- ``GET /languages``: the served pair, ``[{"code", "name", "targets"}]``.
- ``POST /v1/translate``: the native API, with beam size, length penalty,
  n-best, scores and, on request, alignments to the source.
- ``GET /health`` (200 once the model is loaded) and ``GET /v1/info``.
- ``GET /``: a web page to type sentences and read their translations (it uses
  ``/languages`` and ``/translate`` like any client).

Concurrent requests are decoded together (see ``batching.py``); decoding runs
in a worker thread, so ``/health`` answers while a batch decodes. Models are
loaded only through the safe checkpoint loader. Limits on the body size, the
sentences per request and the characters per sentence keep one request from
taking the server.
"""

from __future__ import annotations

import asyncio
import hmac
import json
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qs

import python_multipart
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, Field, ValidationError
from python_multipart.exceptions import FormParserError
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..decoding.translator import MAX_LENGTH_PENALTY, Translator
from ..errors import TransformerMTError
from .batching import BatchingTranslator, DecodeOptions, QueueFull, ShuttingDown

# Names of common language codes for /languages; other codes are shown as they are.
LANGUAGE_NAMES = {
    "ar": "Arabic", "cs": "Czech", "de": "German", "en": "English", "es": "Spanish", "fr": "French",
    "hi": "Hindi", "it": "Italian", "ja": "Japanese", "ko": "Korean", "nl": "Dutch", "pl": "Polish",
    "pt": "Portuguese", "ro": "Romanian", "ru": "Russian", "sv": "Swedish", "tr": "Turkish", "uk": "Ukrainian",
    "vi": "Vietnamese", "zh": "Chinese",
}


@dataclass
class ServeLimits:
    max_body_bytes: int = 1_000_000
    max_sentences_per_request: int = 256
    max_chars_per_sentence: int = 5_000
    # Decoding time grows with the text, not the body size: this bounds how long one request holds the decoder.
    max_chars_per_request: int = 20_000
    max_nbest: int = 8
    max_beam_size: int = 16


class ApiError(Exception):
    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers


class NativeRequest(BaseModel):
    """Body of POST /v1/translate."""

    text: str | list[str] = Field(description="a sentence or a list of sentences")
    beam_size: int | None = Field(None, ge=1, description="default: the model's decoding.beam_size")
    length_penalty: float | None = Field(None, ge=-MAX_LENGTH_PENALTY, le=MAX_LENGTH_PENALTY, allow_inf_nan=False,
                                         description="GNMT alpha")
    nbest: int = Field(1, ge=1, description="translations per sentence, best first")
    alignment: bool | Literal["pieces", "words"] = Field(
        False, description="true or 'pieces': each translation also gets 'alignment', pairs [i, j] (source "
                           "piece i aligned to target piece j, from 0), with 'source_tokens' and 'target_tokens'; "
                           "'words': the same for words")
    alignment_layer: int | None = Field(None, ge=1, description="decoder layer of the alignment, from 1 "
                                                                "(default: the penultimate)")
    api_key: str | None = Field(None, description="needed when the server was started with --api-key-file")


def _language_entry(code: str, targets: list[str]) -> dict:
    return {"code": code, "name": LANGUAGE_NAMES.get(code, code), "targets": targets}


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it passes ``limit`` bytes (also without Content-Length)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"request body of {declared} bytes is larger than the limit of {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ApiError(413, f"request body is larger than the limit of {limit} bytes")
    return bytes(body)


def _reject_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def _form_fields(pairs: dict[str, list[str]]) -> dict:
    """One value per field as LibreTranslate reads a form, except ``q``, which may repeat (a list)."""
    return {key: values if key == "q" and len(values) > 1 else values[0] for key, values in pairs.items()}


def _parse_multipart(content_type: str, body: bytes) -> dict:
    """A multipart/form-data body (what ``curl -F`` and browsers' FormData send); text fields only."""
    fields: dict[str, list[str]] = {}
    files: list[str] = []

    def on_field(field) -> None:
        if field.field_name is None:  # older python-multipart versions let a nameless part through
            raise ApiError(400, "a part of the multipart form has no name")
        fields.setdefault(field.field_name.decode("utf-8"), []).append((field.value or b"").decode("utf-8"))

    def on_file(file) -> None:
        files.append((file.field_name or b"").decode("utf-8", "replace"))

    headers = {"Content-Type": content_type.encode("latin-1"), "Content-Length": str(len(body)).encode()}
    try:
        # A part in a transfer encoding other than 7bit/8bit/binary/base64/quoted-printable is an error,
        # not raw bytes passed on.
        parser = python_multipart.create_form_parser(headers, on_field, on_file,
                                                     config={"UPLOAD_ERROR_ON_BAD_CTE": True})
        parser.write(body)
        parser.finalize()
    except UnicodeError:
        raise ApiError(400, "a field of the multipart form is not valid UTF-8") from None
    except (FormParserError, ValueError) as exc:
        raise ApiError(400, f"the multipart form body is malformed ({exc})") from None
    if files:
        raise ApiError(400, f"file uploads are not accepted (field {files[0]!r}); send the text as the 'q' field")
    return _form_fields(fields)


def _parse_libretranslate_body(content_type: str, body: bytes) -> dict:
    """JSON, or a form (urlencoded or multipart) as LibreTranslate's web clients send."""
    media_type = content_type.split(";")[0].strip().lower()  # media types are case-insensitive
    if media_type == "application/x-www-form-urlencoded":
        try:
            return _form_fields(parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False))
        except UnicodeDecodeError:
            raise ApiError(400, "the form body is not valid UTF-8") from None
    if media_type == "multipart/form-data":
        return _parse_multipart(content_type, body)
    try:
        data = json.loads(body, parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError is a ValueError
        raise ApiError(400, f"the body is not valid JSON ({exc}); send a JSON object such as "
                            f'{{"q": "text", "source": "auto", "target": "xx"}}') from None
    except RecursionError:
        raise ApiError(400, "the JSON body is nested too deeply") from None
    if not isinstance(data, dict):
        raise ApiError(400, "the JSON body must be an object with a 'q' field")
    return data


def create_app(translator: Translator, *, limits: ServeLimits | None = None, max_batch_sentences: int = 64,
               max_wait_ms: float = 2.0, max_queue_sentences: int = 2048, api_keys: set[str] | None = None,
               info: dict | None = None) -> FastAPI:
    """The FastAPI application serving ``translator`` (uvicorn runs it; tests call it with a client)."""
    limits = limits or ServeLimits()
    data = translator.config.data
    source, target = data.src_lang, data.tgt_lang
    # A multilingual model (OPUS-MT's >>fra<< tokens) translates into each of its languages: the client's
    # 'target' picks one; otherwise the one pair of the config.
    source_tokenizer = getattr(translator, "src_tokenizer", None)  # wrappers (tests) may have none
    codes = source_tokenizer.language_codes() if source_tokenizer is not None else []
    targets = [code[2:-2] for code in codes] or [target]
    default_beam = translator.config.decoding.beam_size
    default_penalty = translator.config.decoding.length_penalty
    state = {"batcher": None}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state["batcher"] = BatchingTranslator(translator, max_batch_sentences, max_wait_ms, max_queue_sentences)
        app.state.batcher = state["batcher"]
        try:
            yield
        finally:
            # Uvicorn has stopped taking requests and waited for the open ones; finish what is queued.
            await asyncio.to_thread(state["batcher"].close)

    app = FastAPI(title="transformer-mt", version="0.1.0", lifespan=lifespan,
                  description=f"Translation {source} -> {target} with a transformer-mt model.")

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError):
        return JSONResponse({"error": exc.message}, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError):
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors())
        return JSONResponse({"error": f"invalid request: {problems}"}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):  # 404, 405, ...: the same JSON shape
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception):
        return JSONResponse({"error": f"internal error ({type(exc).__name__}); see the server log"}, status_code=500)

    def check_sentences(q) -> list[str]:
        sentences = [q] if isinstance(q, str) else q
        if not isinstance(sentences, list) or not all(isinstance(s, str) for s in sentences):
            raise ApiError(400, "'q' must be a string or a list of strings")
        for i, sentence in enumerate(sentences):
            try:
                sentence.encode("utf-8")
            except UnicodeEncodeError:  # a lone surrogate ("\ud800") is valid JSON but no text
                raise ApiError(400, f"sentence {i} is not valid Unicode text (a lone surrogate)") from None
        if len(sentences) > limits.max_sentences_per_request:
            raise ApiError(413, f"{len(sentences)} sentences in one request; the limit is "
                                f"{limits.max_sentences_per_request} (max_sentences_per_request)")
        for i, sentence in enumerate(sentences):
            if len(sentence) > limits.max_chars_per_sentence:
                raise ApiError(413, f"sentence {i} has {len(sentence)} characters; the limit is "
                                    f"{limits.max_chars_per_sentence} (max_chars_per_sentence)")
        total = sum(len(sentence) for sentence in sentences)
        if total > limits.max_chars_per_request:
            raise ApiError(413, f"the request holds {total} characters; the limit is {limits.max_chars_per_request} "
                                f"(max_chars_per_request): send the text in several requests")
        return sentences

    async def decode(sentences: list[str], options: DecodeOptions):
        if options.beam_size > limits.max_beam_size or options.nbest > limits.max_nbest:
            raise ApiError(400, f"beam size {options.beam_size} / n-best {options.nbest} above this server's "
                                f"limits ({limits.max_beam_size} / {limits.max_nbest})")
        try:
            future = state["batcher"].submit(sentences, options)
        except QueueFull as exc:
            raise ApiError(503, f"the server is busy: {exc}; retry shortly", {"Retry-After": "1"}) from None
        except ShuttingDown as exc:
            raise ApiError(503, str(exc), {"Retry-After": "5"}) from None
        try:
            return await asyncio.wrap_future(future)
        except TransformerMTError as exc:
            raise ApiError(400, str(exc)) from None

    encoded_keys = [k.encode("utf-8") for k in api_keys] if api_keys is not None else None

    def check_api_key(key) -> None:
        if encoded_keys is None:
            return
        try:
            given = key.encode("utf-8") if isinstance(key, str) else None
        except UnicodeEncodeError:
            given = None
        # compare_digest on bytes: constant time, and any Unicode key works (it refuses non-ASCII str).
        if given is None or not any(hmac.compare_digest(given, k) for k in encoded_keys):
            raise ApiError(403, "missing or invalid API key; send it as 'api_key'")

    @app.post("/translate", summary="Translate (LibreTranslate-compatible)")
    async def translate_libretranslate(request: Request):
        body = await _read_body(request, limits.max_body_bytes)
        fields = _parse_libretranslate_body(request.headers.get("content-type", ""), body)
        check_api_key(fields.get("api_key"))
        if "q" not in fields:
            raise ApiError(400, "missing 'q': the text to translate (a string or a list of strings)")
        sentences = check_sentences(fields["q"])
        src, tgt = fields.get("source", "auto"), fields.get("target", targets[0] if not codes else None)
        if codes and tgt in (None, "auto"):
            raise ApiError(400, f"this model translates into {len(targets)} languages: give 'target' (one of "
                                f"{', '.join(targets[:20])}{', ...' if len(targets) > 20 else ''}); see GET /languages")
        if src not in ("auto", source) or tgt not in ("auto", *targets):  # one source: "auto" can only mean it
            raise ApiError(400, f"this server translates {source} -> {', '.join(targets[:20])} only (got source "
                                f"{src!r}, target {tgt!r}); see GET /languages")
        if fields.get("format", "text") != "text":
            raise ApiError(400, f"format {fields.get('format')!r} is not supported; use 'text'")
        try:
            alternatives = int(fields.get("alternatives", 0) or 0)
        except (TypeError, ValueError):
            raise ApiError(400, "'alternatives' must be a whole number") from None
        if alternatives < 0:
            raise ApiError(400, "'alternatives' must be 0 or more")
        nbest = alternatives + 1
        results = await decode(sentences, DecodeOptions(max(default_beam, nbest), default_penalty, nbest,
                                                        target_language=tgt if codes else None))
        texts = [[t.text for t in result] for result in results]
        single = isinstance(fields["q"], str)
        answer = {"translatedText": texts[0][0] if single else [t[0] for t in texts]}
        if alternatives:
            answer["alternatives"] = texts[0][1:] if single else [t[1:] for t in texts]
        if src == "auto":
            detected = {"confidence": 100.0, "language": source}  # one source language: nothing to detect
            answer["detectedLanguage"] = detected if single else [detected] * len(texts)
        return answer

    @app.get("/languages", summary="Languages (LibreTranslate-compatible)")
    async def languages():
        return [_language_entry(source, targets)]

    @app.post("/v1/translate", summary="Translate with decoding options and scores", openapi_extra={
        "requestBody": {"required": True, "content": {"application/json": {"schema": NativeRequest.model_json_schema()}}}})
    async def translate_native(http_request: Request):
        body = await _read_body(http_request, limits.max_body_bytes)
        try:
            request = NativeRequest.model_validate_json(body)
        except ValidationError as exc:
            raise RequestValidationError(exc.errors(include_url=False, include_context=False)) from None
        check_api_key(request.api_key)
        sentences = check_sentences(request.text)
        beam = request.beam_size or max(default_beam, request.nbest)
        if request.nbest > beam:
            raise ApiError(400, f"nbest ({request.nbest}) cannot exceed beam_size ({beam})")
        penalty = default_penalty if request.length_penalty is None else request.length_penalty
        alignment = "pieces" if request.alignment is True else request.alignment or None
        if request.alignment_layer is not None and alignment is None:
            raise ApiError(400, "'alignment_layer' chooses the layer of an alignment; add \"alignment\": true")
        results = await decode(sentences, DecodeOptions(beam, penalty, request.nbest, alignment,
                                                        request.alignment_layer))

        def answer(t) -> dict:
            if alignment is None:
                return {"text": t.text, "score": t.score}
            return {"text": t.text, "score": t.score, "alignment": [list(pair) for pair in t.alignment],
                    "source_tokens": t.source_tokens, "target_tokens": t.target_tokens}

        return {"translations": [[answer(t) for t in result] for result in results],
                "source": source, "target": target, "beam_size": beam, "length_penalty": penalty}

    @app.get("/", include_in_schema=False)
    async def web_page():
        return FileResponse(Path(__file__).with_name("static") / "index.html", media_type="text/html")

    @app.get("/health", summary="200 once the model is loaded")
    async def health():
        return {"status": "ok"}

    @app.get("/v1/info", summary="The served model and the server's settings")
    async def server_info():
        batcher = state["batcher"]
        sizes = batcher.batch_sizes if batcher else []
        return {**(info or {}), "source": source, "target": target, "beam_size": default_beam,
                "length_penalty": default_penalty, "limits": asdict(limits),
                "batching": {"max_batch_sentences": max_batch_sentences, "max_wait_ms": max_wait_ms,
                             "max_queue_sentences": max_queue_sentences, "batches_decoded": len(sizes),
                             "sentences_decoded": sum(sizes),
                             "sentences_waiting": batcher.queued_sentences if batcher else 0,
                             "sentences_decoding": batcher.decoding_sentences if batcher else 0}}

    return app
