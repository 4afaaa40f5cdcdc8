"""Oversized bodies are refused while they arrive, not after: also chunked ones, which declare no
Content-Length, and on the direct-upload route, which needs no login."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from httpx import AsyncClient
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ecosort_common.testing import TokenIssuer
from ecosort_waste.api.body_limit import MAX_BODY_BYTES

from .conftest import serving

API = "/api/v1/waste"
CHUNK = 64 * 1024
SENT_AT_MOST = 64 * 1024 * 1024  # what the client offers: six times the limit
# What the app may read of it: the limit, then at most one more of the messages uvicorn hands
# over (it pauses reading at 64 KiB buffered, plus what one socket read brought).
READ_AT_MOST = MAX_BODY_BYTES + 1024 * 1024
FORGED_FORM = {
    "key": f"incoming/{uuid.uuid4()}/{uuid.uuid4()}",
    "Content-Type": "image/jpeg",
    "max_bytes": str(10**12),
    "expires": "9999999999",
    "signature": "0" * 64,
}


class CountingApp:
    """The app as uvicorn serves it, counting the body bytes the app pulled from the server."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.received = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def counting_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                self.received += len(message.get("body", b""))
            return message

        await self.app(scope, counting_receive, send)


@pytest.fixture
async def counted(app: Any) -> AsyncIterator[tuple[CountingApp, str]]:
    """The session's app behind a uvicorn of its own, so the bytes it reads can be counted."""
    counting = CountingApp(app)
    async with serving(counting) as url:
        yield counting, url


class ChunkedForm:
    """A multipart form whose file part goes on for SENT_AT_MOST bytes, sent chunked (no
    Content-Length); `sent` is how much of the file part the client got to hand over."""

    def __init__(self, fields: dict[str, str], file_field: str) -> None:
        self.boundary = uuid.uuid4().hex
        self.fields = fields
        self.file_field = file_field
        self.sent = 0

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    async def body(self) -> AsyncIterator[bytes]:
        for name, value in self.fields.items():
            yield (
                f"--{self.boundary}\r\nContent-Disposition: form-data; "
                f'name="{name}"\r\n\r\n{value}\r\n'
            ).encode()
        yield (
            f"--{self.boundary}\r\nContent-Disposition: form-data; "
            f'name="{self.file_field}"; filename="photo.jpg"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        chunk = b"\xff" * CHUNK
        while self.sent < SENT_AT_MOST:
            self.sent += len(chunk)
            yield chunk
        yield f"\r\n--{self.boundary}--\r\n".encode()


async def post_over_http(url: str, headers: dict[str, str], form: ChunkedForm) -> None:
    # The server closes the connection while the client is still sending: the point. Uvicorn
    # does no lingering close, so the 413 is then usually lost to the reset; the in-process
    # tests below check the answer itself.
    async with httpx.AsyncClient(timeout=60) as http:
        with contextlib.suppress(httpx.TransportError):
            await http.post(url, headers=headers, content=form.body())


def assert_problem_413(response: httpx.Response) -> None:
    assert response.status_code == 413, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["status"] == 413


@pytest.mark.parametrize("route", ["analyses", "direct"])
async def test_chunked_body_over_the_limit_stops_being_read_over_http(
    counted: tuple[CountingApp, str], token_issuer: TokenIssuer, route: str
) -> None:
    counting, base = counted
    if route == "analyses":
        form = ChunkedForm({}, "image")
        url = f"{base}{API}/analyses"
        auth = {"Authorization": f"Bearer {token_issuer.token(uuid.uuid4())}"}
    else:  # no login: a forged form, whose signature is checked only once the form is parsed
        form = ChunkedForm(FORGED_FORM, "file")
        url = f"{base}{API}/uploads/direct"
        auth = {}
    await post_over_http(url, {**auth, "Content-Type": form.content_type}, form)
    assert counting.received <= READ_AT_MOST, f"the app read {counting.received} bytes"
    assert form.sent < SENT_AT_MOST, "the server took the whole body"


async def test_chunked_photo_over_the_limit_is_a_413_problem(
    client: AsyncClient, token_issuer: TokenIssuer
) -> None:
    # In process the client's body is pulled only as the app reads it: `sent` is what was read.
    form = ChunkedForm({}, "image")
    headers = {
        "Authorization": f"Bearer {token_issuer.token(uuid.uuid4())}",
        "Content-Type": form.content_type,
    }
    response = await client.post(f"{API}/analyses", headers=headers, content=form.body())
    assert_problem_413(response)
    assert response.json()["title"] == "Image too large"
    assert response.headers["connection"] == "close"
    assert form.sent <= MAX_BODY_BYTES + CHUNK


async def test_chunked_direct_upload_over_the_limit_is_a_413_problem(client: AsyncClient) -> None:
    form = ChunkedForm(FORGED_FORM, "file")
    response = await client.post(
        f"{API}/uploads/direct",
        headers={"Content-Type": form.content_type},
        content=form.body(),
    )
    assert_problem_413(response)
    assert response.headers["connection"] == "close"
    assert form.sent <= MAX_BODY_BYTES + CHUNK


async def test_upload_reference_body_is_capped_too(
    client: AsyncClient, token_issuer: TokenIssuer
) -> None:
    sent = 0

    async def endless_json() -> AsyncIterator[bytes]:
        nonlocal sent
        yield b'{"upload_id": "'
        while sent < SENT_AT_MOST:
            sent += CHUNK
            yield b"0" * CHUNK

    headers = {
        "Authorization": f"Bearer {token_issuer.token(uuid.uuid4())}",
        "Content-Type": "application/json",
    }
    response = await client.post(f"{API}/analyses", headers=headers, content=endless_json())
    assert_problem_413(response)
    assert sent <= 2 * CHUNK


async def test_declared_oversize_is_refused_before_reading_with_a_problem(
    client: AsyncClient, token_issuer: TokenIssuer
) -> None:
    headers = {"Authorization": f"Bearer {token_issuer.token(uuid.uuid4())}"}
    big = b"\0" * (MAX_BODY_BYTES + 1)
    for path, field in ((f"{API}/analyses", "image"), (f"{API}/uploads/direct", "file")):
        response = await client.post(path, headers=headers, files={field: ("x.jpg", big)})
        assert_problem_413(response)
