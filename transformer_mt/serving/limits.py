"""What every route of the server shares: the limits on a request (ServeLimits), the error answer (ApiError:
``{"error": ...}`` with its status) and the request body read within its limit (read_body)."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request
from starlette.requests import ClientDisconnect


@dataclass
class ServeLimits:
    max_body_bytes: int = 1_000_000
    max_sentences_per_request: int = 256
    max_chars_per_sentence: int = 5_000
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
