"""HEAD answers as GET without the body on every kind of route the waste API has: the polling
path (a plain Starlette route ahead of FastAPI's router), an APIRoute list, and the endless SSE
stream, which must not keep a HEAD waiting; where GET is refused, HEAD is refused alike."""

from __future__ import annotations

import asyncio
import io
import uuid

import pytest
from fastapi import FastAPI
from httpx import AsyncClient, Response
from PIL import Image

from ecosort_common.errors import PROBLEM_JSON
from ecosort_common.testing import TokenIssuer

API = "/api/v1/waste"
# Set per response, or by the server for the body it frames (a stream is chunked, a HEAD not).
PER_RESPONSE = {"x-request-id", "date", "transfer-encoding"}


def _headers(response: Response) -> dict[str, str]:
    return {name: value for name, value in response.headers.items() if name not in PER_RESPONSE}


@pytest.fixture
def user(token_issuer: TokenIssuer) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_issuer.token(uuid.uuid4())}"}


@pytest.fixture
async def analysis_id(client: AsyncClient, user: dict[str, str], enqueued: list[uuid.UUID]) -> str:
    """A queued analysis: its event stream stays open until the pipeline (not running) ends."""
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (1, 2, 3)).save(buf, format="JPEG")
    response = await client.post(
        f"{API}/analyses", headers=user, files={"image": ("a.jpg", buf.getvalue())}
    )
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


async def test_head_on_the_polling_path_and_the_list_is_get_without_the_body(
    client: AsyncClient, user: dict[str, str], analysis_id: str
) -> None:
    for path, status in (
        (f"{API}/analyses/{analysis_id}", 200),  # the plain Starlette route
        (f"{API}/analyses/{uuid.uuid4()}", 404),
        (f"{API}/analyses", 200),
    ):
        get = await client.get(path, headers=user)
        head = await client.head(path, headers=user)
        assert (head.status_code, get.status_code) == (status, status), path
        assert _headers(head) == _headers(get), path
        assert head.content == b""


async def test_head_on_the_event_stream_answers_at_once_with_its_headers(
    app: FastAPI, client: AsyncClient, live_url: str, user: dict[str, str], analysis_id: str
) -> None:
    path = f"{API}/analyses/{analysis_id}/events"
    async with (
        AsyncClient(base_url=live_url, timeout=10) as http,
        http.stream("GET", path, headers=user) as streaming,
    ):
        assert streaming.status_code == 200
        # Over real HTTP, and through the ASGI transport, which waits for the app to return.
        head = await asyncio.wait_for(http.head(path, headers=user), 5)
    assert head.status_code == 200
    assert _headers(head) == _headers(streaming)
    assert head.headers["content-type"].startswith("text/event-stream")
    assert head.content == b""
    in_process = await asyncio.wait_for(client.head(path, headers=user), 5)
    assert (in_process.status_code, in_process.content) == (200, b"")
    # No stream was left following the analysis for a HEAD.
    for _ in range(200):
        if app.state.progress_hub.watcher_count == 0:
            break
        await asyncio.sleep(0.01)
    assert app.state.progress_hub.watcher_count == 0


async def test_head_on_the_events_of_a_missing_analysis_is_its_404(
    client: AsyncClient, user: dict[str, str]
) -> None:
    path = f"{API}/analyses/{uuid.uuid4()}/events"
    get = await client.get(path, headers=user)
    head = await client.head(path, headers=user)
    assert (head.status_code, head.headers["content-type"]) == (404, PROBLEM_JSON)
    assert _headers(head) == _headers(get)
    assert head.content == b""


async def test_head_where_only_post_is_allowed_is_a_405_problem(
    client: AsyncClient, user: dict[str, str]
) -> None:
    get = await client.get(f"{API}/uploads", headers=user)
    head = await client.head(f"{API}/uploads", headers=user)
    assert (head.status_code, head.headers["content-type"]) == (405, PROBLEM_JSON)
    assert head.headers["allow"] == get.headers["allow"] == "POST"
    assert _headers(head) == _headers(get)
    assert head.content == b""
