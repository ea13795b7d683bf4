"""What every route of the server shares: the limits on a request (ServeLimits), the error answer (ApiError:
``{"error": ...}`` with its status), the request body read within its limit (read_body), the texts of a
request within the limits (check_texts) and the API keys (ApiKeys)."""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from fastapi import Request
from starlette.requests import ClientDisconnect


@dataclass
class ServeLimits:
    max_body_bytes: int = 1_000_000
    max_sentences_per_request: int = 256
    max_chars_per_text: int = 5_000  # one text of 'q' (a sentence, a paragraph, a page) before it is split
    # Decoding time grows with the text, not the body size: this bounds how long one request holds the decoder.
    max_chars_per_request: int = 20_000
    max_nbest: int = 8
    max_beam_size: int = 16
    # POST /translate_file: the uploaded file, and the characters of text in it (decoding time).
    max_file_bytes: int = 2_000_000
    max_file_chars: int = 50_000


class ApiError(Exception):
    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers


# A body over the limit is read on (and dropped) up to this many bytes more, so that the client, still
# sending, gets the 413 answer instead of a connection reset; beyond it the connection is cut.
MAX_DRAINED_BYTES = 16 * 2**20


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it passes ``limit`` bytes (also without Content-Length)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"request body of {declared} bytes is larger than the limit of {limit} bytes")
    body = bytearray()
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received <= limit:
                body += chunk
            elif received > limit + MAX_DRAINED_BYTES:
                break
        if received > limit:
            raise ApiError(413, f"request body is larger than the limit of {limit} bytes")
    except ClientDisconnect:
        # The client went away mid-upload: nobody reads an answer, and it is no server error to log.
        raise ApiError(400, "the client disconnected before sending the whole body") from None
    return bytes(body)


def check_texts(q, limits: ServeLimits) -> list[str]:
    """The texts of a request (a string or a list of strings), within the limits."""
    texts = [q] if isinstance(q, str) else q
    if not isinstance(texts, list) or not all(isinstance(s, str) for s in texts):
        raise ApiError(400, "'q' must be a string or a list of strings")
    for i, text in enumerate(texts):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate ("\ud800") is valid JSON but no text
            raise ApiError(400, f"text {i} is not valid Unicode text (a lone surrogate)") from None
    # max_sentences_per_request keeps its name from when a text was one sentence (its command-line option uses it).
    if len(texts) > limits.max_sentences_per_request:
        raise ApiError(413, f"{len(texts)} texts in one request; the limit is "
                            f"{limits.max_sentences_per_request} (max_sentences_per_request)")
    for i, text in enumerate(texts):
        if len(text) > limits.max_chars_per_text:
            raise ApiError(413, f"text {i} has {len(text)} characters; the limit per text is "
                                f"{limits.max_chars_per_text} (max_chars_per_text, serve --max-chars-per-text): send "
                                f"it as several texts")
    total = sum(len(text) for text in texts)
    if total > limits.max_chars_per_request:
        raise ApiError(413, f"the request holds {total} characters; the limit is {limits.max_chars_per_request} "
                            f"(max_chars_per_request): send the text in several requests")
    return texts


class ApiKeys:
    """The API keys a request must send one of (serve --api-key-file); ``None``: no key is needed."""

    def __init__(self, keys: set[str] | None):
        self.encoded = [k.encode("utf-8") for k in keys] if keys is not None else None

    @property
    def required(self) -> bool:
        return self.encoded is not None

    def check(self, key) -> None:
        if self.encoded is None:
            return
        try:
            given = key.encode("utf-8") if isinstance(key, str) else None
        except UnicodeEncodeError:
            given = None
        # compare_digest on bytes: constant time, and any Unicode key works (it refuses non-ASCII str).
        if given is None or not any(hmac.compare_digest(given, k) for k in self.encoded):
            raise ApiError(403, "missing or invalid API key; send it as 'api_key'")
