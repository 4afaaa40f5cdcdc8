"""HEAD is answered wherever GET is, as GET without the body, whatever kind of route serves it;
where GET is refused, HEAD is refused the same way."""

from __future__ import annotations

import asyncio

import pytest
from fastapi import FastAPI
from httpx import AsyncClient, Response
from starlette.types import Message

from ecosort_common.errors import PROBLEM_JSON

API = "/api/v1/demo"


def _headers(response: Response) -> dict[str, str]:
    return {name: value for name, value in response.headers.items() if name != "x-request-id"}


async def _sent(app: FastAPI, method: str, path: str, spec_version: str) -> list[Message]:
    """What the app itself sends: httpx, like an HTTP server, drops a HEAD's body on its own."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": spec_version},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"test")],
        "server": ("test", 80),
        "client": ("127.0.0.1", 50000),
    }
    sent: list[Message] = []
    requested = False

    async def receive() -> Message:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.Event().wait()  # the client stays
        raise AssertionError("unreachable")

    async def send(message: Message) -> None:
        sent.append(message)

    await asyncio.wait_for(app(scope, receive, send), 5)
    return sent


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/healthz", 200),  # an APIRoute: FastAPI alone answers HEAD there with a 405
        (f"{API}/readyz", 200),
        (f"{API}/openapi.json", 200),  # a plain Starlette route
        (f"{API}/teapot", 418),
        (f"{API}/notes/7", 404),
        (f"{API}/notes/seven", 422),
        (f"{API}/nothing-here", 404),
    ],
)
async def test_head_is_get_without_the_body(client: AsyncClient, path: str, status: int) -> None:
    get = await client.get(path)
    head = await client.head(path)
    assert (head.status_code, get.status_code) == (status, status)
    assert _headers(head) == _headers(get)
    assert int(head.headers["content-length"]) == len(get.content) > 0
    assert head.content == b""
    assert head.headers["x-request-id"]


async def test_head_where_get_is_not_allowed_is_a_405_problem(client: AsyncClient) -> None:
    head = await client.head(f"{API}/echo")
    get = await client.get(f"{API}/echo")
    assert (head.status_code, head.headers["content-type"]) == (405, PROBLEM_JSON)
    assert head.headers["allow"] == get.headers["allow"] == "POST"
    assert head.content == b""


async def test_a_get_that_acts_refuses_head_without_acting(client: AsyncClient) -> None:
    head = await client.head(f"{API}/act")
    assert (head.status_code, head.headers["content-type"]) == (405, PROBLEM_JSON)
    assert head.headers["allow"] == "GET"
    assert head.content == b""
    assert (await client.get(f"{API}/act")).json() == {"acts": 1}


async def test_allow_names_head_beside_get(client: AsyncClient) -> None:
    refused = await client.post("/healthz")
    assert refused.status_code == 405
    assert sorted(refused.headers["allow"].split(", ")) == ["GET", "HEAD"]


async def test_head_on_an_endless_stream_ends_with_the_headers(client: AsyncClient) -> None:
    # The ASGI transport waits for the app to return: this hangs if the stream goes on.
    head = await asyncio.wait_for(client.head(f"{API}/forever"), 5)
    assert head.status_code == 200
    assert head.headers["content-type"].startswith("text/plain")
    assert head.content == b""


@pytest.mark.parametrize("path", ["/healthz", f"{API}/openapi.json", f"{API}/forever"])
# Under 2.4 a stream no longer watches for the client leaving: it stops when `send` fails.
@pytest.mark.parametrize("spec_version", ["2.3", "2.4"])
async def test_the_app_sends_the_headers_and_no_body(
    app: FastAPI, path: str, spec_version: str
) -> None:
    start, *body = await _sent(app, "HEAD", path, spec_version)
    assert (start["type"], start["status"]) == ("http.response.start", 200)
    assert body == [{"type": "http.response.body", "body": b"", "more_body": False}]
