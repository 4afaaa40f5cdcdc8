"""Request bodies read with a cap: a 413 problem+json as soon as a body passes its limit."""

from __future__ import annotations

from fastapi import Request
from starlette.types import Message

from ecosort_common.errors import Problem
from ecosort_waste import images

# Multipart framing and the signed fields around a 10 MB image are a few hundred bytes; a body
# far above is refused, from its Content-Length or else as its bytes arrive.
MULTIPART_OVERHEAD_BYTES = 64 * 1024
MAX_BODY_BYTES = images.MAX_UPLOAD_BYTES + MULTIPART_OVERHEAD_BYTES


def capped_body(
    request: Request, detail: str, *, title: str | None = None, max_bytes: int = MAX_BODY_BYTES
) -> Request:
    """The request, refused with a 413 if its Content-Length is over ``max_bytes``, or else as
    soon as more than ``max_bytes`` of its body have arrived.

    A chunked body declares no length, and Starlette's form parser spools a file part whole
    before its size can be looked at. (FastAPI's ``max_body_size`` stops reading too, but answers
    a declared oversize with a text/plain 413 in place of any problem+json.)"""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        # Nothing read yet. The server discards the declared rest, so the client, still
        # sending, gets this answer rather than a reset connection.
        raise Problem(413, detail, title=title)
    received = 0

    async def receive() -> Message:
        nonlocal received
        message = await request.receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > max_bytes:
                # A chunked body has no declared end: without `Connection: close` uvicorn would
                # keep the connection by reading and discarding whatever more the client sends.
                raise Problem(413, detail, title=title, headers={"Connection": "close"})
        return message

    return Request(request.scope, receive)
