"""Fixtures of the recycling tests: a migrated throw-away database with the knowledge base
loaded, a leased Redis database, the token issuer, and two running apps: rules only, and one
with an OpenAI-compatible model configured, served by a local HTTP server that replays recorded
Chat Completions responses (the `openai` package speaks httpx2, which respx cannot intercept;
real HTTP on loopback also makes the timeout a real one)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient
from redis.asyncio import Redis

from ecosort_common.testing import TokenIssuer, free_port, service_fixtures
from ecosort_recycling.config import Settings
from ecosort_recycling.loader import load_from_files
from ecosort_recycling.main import create_app

token_issuer, base_settings, app, client = service_fixtures(
    "ecosort_recycling", Settings, create_app
)
RECORDINGS = Path(__file__).parent / "recordings"


@dataclass
class Reply:
    status: int = 200
    body: dict[str, Any] = field(default_factory=dict)
    delay_seconds: float = 0.0
    # Read the request, then close the connection without a response.
    drop: bool = False


class RecordedModelServer:
    """`POST /v1/chat/completions` answered with the reply a test set, on real HTTP; every
    request body is kept for the test to inspect."""

    def __init__(self) -> None:
        self.port = free_port()
        self.reply = Reply()
        self.requests: list[dict[str, Any]] = []
        self._server: ThreadingHTTPServer | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def replay(self, recording: str) -> None:
        self.reply = Reply(body=json.loads((RECORDINGS / recording).read_text("utf-8")))

    def respond(self, status: int, body: dict[str, Any], delay_seconds: float = 0.0) -> None:
        self.reply = Reply(status, body, delay_seconds)

    def reset(self) -> None:
        self.reply = Reply()
        self.requests.clear()

    def start(self) -> RecordedModelServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                server.requests.append(json.loads(self.rfile.read(length)))
                reply = server.reply
                time.sleep(reply.delay_seconds)
                if reply.drop:
                    self.close_connection = True
                    return
                payload = json.dumps(reply.body).encode()
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up first: that was the point of the delay

            def log_message(self, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


@pytest.fixture(scope="session")
def model_server() -> Iterator[RecordedModelServer]:
    server = RecordedModelServer().start()
    yield server
    server.stop()


@pytest.fixture
def model(model_server: RecordedModelServer) -> RecordedModelServer:
    model_server.reset()
    return model_server


@pytest.fixture(scope="session")
def settings(base_settings: Settings) -> Settings:
    # `migrate` loads the knowledge base after the schema; the shared fixture only migrates.
    asyncio.run(load_from_files(base_settings.database_url))
    # No background reload while tests rewrite the tables (test_loader restores them).
    return base_settings.model_copy(update={"knowledge_refresh_seconds": 3600})


@pytest.fixture(scope="session")
def llm_settings(settings: Settings, model_server: RecordedModelServer) -> Settings:
    return settings.model_copy(
        update={
            "llm_base_url": model_server.base_url,
            "llm_model": "test-model",
            "llm_timeout_seconds": 1.0,
            "feedback_rate_limit_per_minute": 5,
            "llm_daily_token_budget": 10_000,
            # Two questions of one user fit, not three (one reserves 1,300-1,700; the recorded
            # replies settle it to 976).
            "llm_daily_tokens_per_user": 3_000,
        }
    )


@pytest.fixture(scope="session")
async def llm_app(llm_settings: Settings) -> AsyncIterator[FastAPI]:
    application = create_app(llm_settings)
    async with LifespanManager(application, startup_timeout=30):
        yield application


@pytest.fixture
async def llm_client(llm_app: FastAPI) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(transport=ASGITransport(app=llm_app), base_url="http://test") as http:
        yield http


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[Redis]:
    """The leased test Redis database, emptied before each test that asks for it (answer
    cache, rate-limit windows and the token budget must not leak between tests)."""
    client = Redis.from_url(settings.redis_url, decode_responses=True)
    await client.flushdb()
    yield client
    await client.aclose()


@pytest.fixture
def auth(token_issuer: TokenIssuer) -> Callable[..., dict[str, str]]:
    """Authorization headers for a new user each call (rate limits and token shares are per
    user), or for `user_id`."""

    def headers(user_id: uuid.UUID | None = None, **claims: Any) -> dict[str, str]:
        token = token_issuer.token(user_id or uuid.uuid4(), **claims)
        return {"Authorization": f"Bearer {token}"}

    return headers
