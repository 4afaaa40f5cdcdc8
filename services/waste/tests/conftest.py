import asyncio
import contextlib
import os
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI

from ecosort_common.testing import free_port, service_fixtures
from ecosort_waste.config import Settings
from ecosort_waste.main import create_app
from ecosort_waste.storage import image_prefix

token_issuer, settings, app, client = service_fixtures("ecosort_waste", Settings, create_app)


@pytest.fixture(scope="session", autouse=True)
def _waste_environment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Stored images go to a throw-away directory; SSE heartbeats come fast enough to test, and
    the SSE reconnection delay is not its default, so a test can tell it follows the setting.
    Autouse and session-scoped, so it runs before the `settings` fixture reads the environment."""
    overrides = {
        "DATA_DIR": str(tmp_path_factory.mktemp("waste-data")),
        "SSE_HEARTBEAT_SECONDS": "1",
        "SSE_RESYNC_SECONDS": "2",
        "SSE_RETRY_MILLISECONDS": "1500",
    }
    saved = {name: os.environ.get(name) for name in overrides}
    os.environ.update(overrides)
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@contextlib.asynccontextmanager
async def serving(app: Any) -> AsyncIterator[str]:
    """`app` served over real HTTP by a uvicorn on a free port; yields its base URL."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_level="warning")
    server = uvicorn.Server(config)
    # No signal handlers: sse-starlette finds "the" uvicorn server through them, and would take
    # any test server's stop for the process's, ending the session app's streams for good.
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@pytest.fixture(scope="session")
async def live_url(app: Any) -> AsyncIterator[str]:
    """The same app served over real HTTP by uvicorn: for streamed responses (SSE), which
    httpx's ASGI transport buffers, and for real concurrent connections."""
    async with serving(app) as url:
        yield url


@pytest.fixture
def enqueued(app: FastAPI) -> Iterator[list[uuid.UUID]]:
    """What the API handed to the pipeline (the Celery worker is the pipeline tests' business)."""
    calls: list[uuid.UUID] = []
    previous = app.state.enqueue_analysis
    app.state.enqueue_analysis = calls.append
    yield calls
    app.state.enqueue_analysis = previous


class Gate:
    """Holds the first call of the functions it wraps until released, for a deterministic
    interleaving of two requests: the first waits in its worker thread while another runs."""

    def __init__(self) -> None:
        self._entered = threading.Event()
        self._released = threading.Event()
        self._first = threading.Lock()

    def wrap(self, function: Callable[..., Any]) -> Callable[..., Any]:
        def gated(*args: Any, **kwargs: Any) -> Any:
            if self._first.acquire(blocking=False):
                self._entered.set()
                self._released.wait(timeout=10)
            return function(*args, **kwargs)

        return gated

    async def entered(self) -> None:
        assert await asyncio.to_thread(self._entered.wait, 10), "nothing reached the gate"

    def release(self) -> None:
        self._released.set()


@pytest.fixture
def gate() -> Iterator[Gate]:
    held = Gate()
    yield held
    held.release()  # a failed test leaves no thread waiting


def stored_images(app: FastAPI, owner: uuid.UUID) -> set[str]:
    """The keys of the sanitised photos stored for `owner` (local storage)."""
    folder = Path(app.state.storage.root) / image_prefix(owner)
    return {f"{image_prefix(owner)}{path.name}" for path in folder.glob("*.jpg")}
