"""Fixtures of the pipeline's tests: a Redis database of their own, a throw-away PostgreSQL
database with the waste migrations, and a local HTTP server replaying recorded answers of the
third parties (OpenAI, Roboflow) and standing in for the recycling service."""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ecosort_common.db import create_engine, create_sessionmaker
from ecosort_common.migrations import upgrade
from ecosort_common.redis import create_redis
from ecosort_common.testing import free_port, temporary_database, temporary_redis_db
from ecosort_waste import pipeline
from ecosort_waste.classifier.registry import ClassifierRegistry, registry_from_settings
from ecosort_waste.config import Settings
from ecosort_waste.guidance import create_guidance_client
from ecosort_waste.storage import storage_from_settings

RECORDINGS = Path(__file__).parent / "recordings"
SHARED_PHOTOS = Path(__file__).resolve().parents[4].parent / "shared" / "data" / "waste-images"


def recording(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((RECORDINGS / name).read_text())
    return loaded


def category_guidance(code: str) -> dict[str, Any]:
    """What recycling answers for GET /api/v1/recycling/categories/{code} (the contract)."""
    return {
        "code": code,
        "name_ko": f"{code} (ko)",
        "name_en": code.replace("_", " ").title(),
        "disposal": f"How {code} is put out.",
        "steps": ["Empty it", "Rinse it"],
        "mistakes": ["Leaving food inside"],
        "marks": [],
        "sources": [{"title": "환경부 재활용품 분리배출 가이드라인", "date": "2024-01-01"}],
        "varies_by_region": False,
    }


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True)
class RawReply:
    """An answer sent as these exact bytes, for what a JSON body cannot be: a redirect, a body
    that is not JSON, one nested past any parser's limit."""

    headers: dict[str, str]
    body: bytes = b""


@dataclass
class FakeThirdParties:
    """One local HTTP server: `POST /v1/chat/completions` answers like OpenAI (from recordings),
    `POST /roboflow/{project}/{version}` like Roboflow's hosted inference (`roboflow_url` is its
    base URL), `GET /api/v1/recycling/categories/{code}` like recycling. Tests steer it:
    `openai_responses` and `roboflow_responses` are queues of (status, JSON body or RawReply)
    answers (the last one repeats), `hang_openai` holds OpenAI calls until released,
    `provider_delay_seconds` delays every OpenAI and Roboflow answer, `recycling_down` answers
    503."""

    port: int = field(default_factory=free_port)
    requests: list[RecordedRequest] = field(default_factory=list)
    openai_responses: list[tuple[int, Any]] = field(default_factory=list)
    roboflow_responses: list[tuple[int, Any]] = field(default_factory=list)
    hang_openai: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    provider_delay_seconds: float = 0.0
    recycling_down: bool = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def roboflow_url(self) -> str:
        return f"{self.url}/roboflow"

    def respond(self, request: RecordedRequest) -> tuple[int, Any]:
        self.requests.append(request)
        if request.path.startswith("/v1/chat/completions"):
            if self.hang_openai.is_set():
                self.release.wait(timeout=60)
            time.sleep(self.provider_delay_seconds)
            return next_reply(self.openai_responses, recording("openai_chat_completion_can.json"))
        if request.path.startswith("/roboflow/"):
            time.sleep(self.provider_delay_seconds)
            return next_reply(self.roboflow_responses, recording("roboflow_detection_can.json"))
        if request.path.startswith("/api/v1/recycling/categories/"):
            if self.recycling_down:
                return 503, {"title": "Service Unavailable"}
            return 200, category_guidance(request.path.rsplit("/", 1)[-1])
        return 404, {"title": "Not Found"}

    def chat_requests(self) -> list[dict[str, Any]]:
        return [
            json.loads(r.body) for r in self.requests if r.path.startswith("/v1/chat/completions")
        ]

    def provider_requests(self) -> list[RecordedRequest]:
        """The requests that reached OpenAI or Roboflow: each one billed."""
        return [
            r for r in self.requests if r.path.startswith(("/v1/chat/completions", "/roboflow/"))
        ]


def next_reply(replies: list[tuple[int, Any]], recorded: Any) -> tuple[int, Any]:
    """The queue's next answer, its last one repeating; a 200 with `recorded` when it is empty."""
    if not replies:
        return 200, recorded
    return replies.pop(0) if len(replies) > 1 else replies[0]


def serve(fake: FakeThirdParties) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        # Keeps connections open, as the real services do: a client reusing one can send at once.
        protocol_version = "HTTP/1.1"

        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            request = RecordedRequest(
                self.command, self.path, dict(self.headers.items()), self.rfile.read(length)
            )
            status, body = fake.respond(request)
            if isinstance(body, RawReply):
                headers, payload = body.headers, body.body
            else:
                headers, payload = {"Content-Type": "application/json"}, json.dumps(body).encode()
            try:
                self.send_response(status)
                for name, value in {**headers, "Content-Length": str(len(payload))}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client (a killed worker) is gone

        do_GET = do_POST = _answer

        def log_message(self, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", fake.port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    return server


@contextmanager
def running_third_parties() -> Iterator[FakeThirdParties]:
    fake = FakeThirdParties()
    server = serve(fake)
    try:
        yield fake
    finally:
        fake.release.set()
        server.shutdown()
        server.server_close()


@pytest.fixture
def third_parties() -> Iterator[FakeThirdParties]:
    with running_third_parties() as fake:
        yield fake


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    with temporary_redis_db() as url:
        yield url


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = create_redis(redis_url)
    yield client
    await client.aclose()


@pytest.fixture(scope="module")
def database_url() -> Iterator[str]:
    with temporary_database("waste_pipeline") as url:
        upgrade("ecosort_waste", url)
        yield url


def photo_bytes(name: str = "metal/metal1.jpg") -> bytes:
    """A shared TrashNet photo re-encoded the way the API stores it (sanitised JPEG)."""
    with Image.open(SHARED_PHOTOS / name) as image:
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


@pytest.fixture
async def sessionmaker(database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(database_url, pool_size=2)
    yield create_sessionmaker(engine)
    await engine.dispose()


@pytest.fixture
def settings(tmp_path: Path, third_parties: FakeThirdParties) -> Settings:
    return Settings(
        data_dir=str(tmp_path),
        recycling_url=third_parties.url,
        classifier_provider="openai",
        openai_api_key="sk-test",
        openai_base_url=f"{third_parties.url}/v1",
        openai_max_retries=0,
        guidance_cache_seconds=0,
    )


def make_deps(
    settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
    redis: Redis,
    classifiers: ClassifierRegistry | None = None,
) -> pipeline.PipelineDeps:
    return pipeline.PipelineDeps(
        sessionmaker=sessionmaker,
        redis=redis,
        storage=storage_from_settings(settings),
        classifiers=classifiers or registry_from_settings(settings),
        guidance=create_guidance_client(
            settings.recycling_url, timeout_seconds=1, attempts=2, cache_seconds=0
        ),
        max_attempts=settings.analysis_max_attempts,
    )


@pytest.fixture
def deps(
    settings: Settings, sessionmaker: async_sessionmaker[AsyncSession], redis: Redis
) -> pipeline.PipelineDeps:
    return make_deps(settings, sessionmaker, redis)
