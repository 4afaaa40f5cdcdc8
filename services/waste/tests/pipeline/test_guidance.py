"""guidance.py: the recycling client's timeout, retry, validation and cache."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import httpx
import pytest
import respx
import structlog

from ecosort_common.testing import free_port
from ecosort_waste.guidance import MAX_BODY_BYTES, GuidanceClient, create_guidance_client

BASE = "http://recycling.test"
CAN_URL = f"{BASE}/api/v1/recycling/categories/can"


def category(code: str = "can") -> dict[str, Any]:
    # The shape recycling serves (DESIGN.md §4 and the waste/recycling contract).
    return {
        "code": code,
        "name_ko": "캔류",
        "name_en": "Cans",
        "disposal": "Empty, rinse and flatten; put in the can bin.",
        "steps": ["Empty it", "Rinse", "Flatten"],
        "mistakes": ["Leaving cigarette butts inside"],
        "marks": ["캔류 철", "캔류 알미늄"],
        "sources": [{"title": "환경부 분리배출 표시", "date": "2024-01-01"}],
        "varies_by_region": False,
    }


def client(**overrides: Any) -> GuidanceClient:
    options: dict[str, Any] = {
        "attempts": 3,
        "backoff_seconds": 0.01,
        "cache_seconds": 0,
        "down_cooldown_seconds": 0,
    }
    options.update(overrides)
    return GuidanceClient(base_url=BASE, http=httpx.AsyncClient(timeout=0.5), **options)


@respx.mock
async def test_returns_the_category_guidance() -> None:
    route = respx.get(CAN_URL).respond(200, json=category())
    assert await client().fetch("can") == category()
    assert route.call_count == 1


@respx.mock
async def test_names_the_request_it_serves() -> None:
    # The worker binds the id of the request that sent the analysis: recycling logs it too.
    route = respx.get(CAN_URL).respond(200, json=category())
    with structlog.contextvars.bound_contextvars(request_id="rid-upload-1"):
        assert await client().fetch("can") == category()
    assert route.calls.last.request.headers["x-request-id"] == "rid-upload-1"
    assert await client().fetch("can") == category()
    assert "x-request-id" not in route.calls.last.request.headers


@respx.mock
async def test_retries_server_errors_and_timeouts_then_succeeds() -> None:
    route = respx.get(CAN_URL)
    route.side_effect = [
        httpx.Response(503),
        httpx.ReadTimeout("slow"),
        httpx.Response(200, json=category()),
    ]
    assert await client().fetch("can") == category()
    assert route.call_count == 3


@respx.mock
async def test_a_body_that_cannot_be_decoded_is_a_failed_attempt() -> None:
    route = respx.get(CAN_URL)
    route.side_effect = [
        httpx.Response(
            200, headers={"Content-Encoding": "gzip"}, stream=httpx.ByteStream(b"not gzip")
        ),
        httpx.Response(200, json=category()),
    ]
    assert await client().fetch("can") == category()
    assert route.call_count == 2


@respx.mock
async def test_gives_up_after_the_attempts_with_none() -> None:
    route = respx.get(CAN_URL).respond(502)
    assert await client(attempts=2).fetch("can") is None
    assert route.call_count == 2


@respx.mock
@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(404, json={"title": "Not Found"}),
        httpx.Response(200, text="<html>gateway</html>"),
        httpx.Response(200, json={"code": "can"}),  # missing the fields the app shows
        httpx.Response(200, json=category("glass_bottle")),  # answer for another code
    ],
)
async def test_unusable_answers_are_not_retried_and_give_none(response: httpx.Response) -> None:
    route = respx.get(CAN_URL).mock(return_value=response)
    assert await client().fetch("can") is None
    assert route.call_count == 1


async def test_recycling_down_gives_none_quickly() -> None:
    # A real closed port: connection refused, as when the service is not running.
    guidance = create_guidance_client(
        f"http://127.0.0.1:{free_port()}", timeout_seconds=0.5, attempts=3
    )
    started = time.monotonic()
    assert await guidance.fetch("can") is None
    assert time.monotonic() - started < 2.0
    await guidance.http.aclose()


@respx.mock
async def test_answers_are_cached_per_code() -> None:
    route = respx.get(CAN_URL).respond(200, json=category())
    cached = client(cache_seconds=60)
    assert await cached.fetch("can") == await cached.fetch("can")
    assert route.call_count == 1


@respx.mock
async def test_a_service_found_down_is_left_alone_for_the_cooldown() -> None:
    route = respx.get(CAN_URL).respond(503)
    guidance = client(attempts=2, down_cooldown_seconds=60)
    assert await guidance.fetch("can") is None
    assert await guidance.fetch("can") is None  # answered at once, without asking
    assert route.call_count == 2


@respx.mock
async def test_a_body_nested_past_the_parsers_limit_gives_none() -> None:
    route = respx.get(CAN_URL).respond(
        200, content=b"[" * 100_000 + b"]" * 100_000, headers={"Content-Type": "application/json"}
    )
    assert await client().fetch("can") is None
    assert route.call_count == 1  # nonsense, like any other: not asked again


@respx.mock
async def test_a_body_past_the_size_limit_is_not_read_and_gives_none() -> None:
    # Valid guidance in every way but its size.
    huge = category() | {"disposal": "x" * (MAX_BODY_BYTES + 1)}
    route = respx.get(CAN_URL).respond(200, json=huge)
    assert await client().fetch("can") is None
    assert route.call_count == 1


async def test_a_service_trickling_its_answer_is_timed_out_per_attempt() -> None:
    """httpx's timeout bounds each read; a byte a second never trips it. The attempt's own
    limit does."""

    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
        writer.write(b"Content-Length: 100\r\n\r\n")
        with contextlib.suppress(ConnectionError):
            for _ in range(100):
                writer.write(b" ")
                await writer.drain()
                await asyncio.sleep(0.2)  # well inside the read timeout below
        writer.close()

    port = free_port()
    server = await asyncio.start_server(trickle, "127.0.0.1", port)
    guidance = create_guidance_client(
        f"http://127.0.0.1:{port}", timeout_seconds=0.5, attempts=2, down_cooldown_seconds=0
    )
    started = time.monotonic()
    try:
        # Without the attempt's limit each attempt takes the 20 s of the whole trickle.
        assert await asyncio.wait_for(guidance.fetch("can"), timeout=10) is None
        assert time.monotonic() - started < 3.0
    finally:
        await guidance.http.aclose()
        server.close()
