"""ASGI entry point: `uvicorn ecosort_waste.main:app`."""

from __future__ import annotations

from collections.abc import Awaitable
from functools import partial

import structlog
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.ext.asyncio import async_sessionmaker
from starlette.concurrency import run_in_threadpool

from ecosort_common.app import create_service_app
from ecosort_common.errors import STORE_RETRY_AFTER_SECONDS, problem_response
from ecosort_common.events import USER_DELETED
from ecosort_waste import models
from ecosort_waste.api import api_router, plain_routes
from ecosort_waste.api.deps import Enqueue
from ecosort_waste.api.view_cache import AnalysisViewCache
from ecosort_waste.config import Settings, get_settings
from ecosort_waste.consumers import UserDeletedHandler
from ecosort_waste.queue import configure_celery, connect, send_analysis
from ecosort_waste.sse import ProgressHub
from ecosort_waste.storage import StorageUnavailable, storage_from_settings

log = structlog.get_logger(__name__)


def create_app(settings: Settings | None = None, *, enqueue: Enqueue | None = None) -> FastAPI:
    settings = settings or get_settings()

    async def start_read_sessions(app: FastAPI) -> None:
        # Reads are single statements: autocommit spares a BEGIN and a ROLLBACK per request.
        autocommit = app.state.engine.execution_options(isolation_level="AUTOCOMMIT")
        app.state.read_sessionmaker = async_sessionmaker(autocommit, expire_on_commit=False)
        app.state.analysis_views = AnalysisViewCache()
        return None

    async def start_queue(app: FastAPI) -> None:
        if enqueue is not None:
            app.state.enqueue_analysis = enqueue
            return
        celery = configure_celery(settings)
        app.state.enqueue_analysis = partial(send_analysis, celery)
        # The broker connection and Celery's transport now, not in the first upload. An
        # unreachable broker does not stop the API: uploads stay queued for the reaper.
        try:
            await run_in_threadpool(connect, celery)
        except Exception as exc:
            log.warning("queue.unreachable_at_start", error=f"{type(exc).__name__}: {exc}")

    async def start_progress_hub(app: FastAPI) -> Awaitable[None]:
        # On the process's one subscription; every SSE client and status poll shares it.
        hub = ProgressHub(app.state.subscription)
        app.state.progress_hub = hub
        return hub.end_streams_at_exit()

    storage = storage_from_settings(settings)
    app = create_service_app(
        settings,
        title="EcoSort waste",
        description="Photo upload, the classification pipeline's progress, results, feedback.",
        routers=[api_router],
        outbox=models.outbox,
        consumers={USER_DELETED: UserDeletedHandler(storage)},
        processed_events=models.processed_events,
        on_startup=[start_read_sessions, start_queue, start_progress_hub],
    )
    app.state.storage = storage
    app.add_exception_handler(StorageUnavailable, _storage_unavailable)
    # The paths every polling client and event stream hits, ahead of FastAPI's router.
    app.router.routes[0:0] = plain_routes(settings.api_prefix)
    return app


async def _storage_unavailable(request: Request, exc: Exception) -> JSONResponse:
    """S3 down, busy or timing out: like the database or Redis not answering, a 503 to retry,
    which names neither the bucket nor the endpoint (the log does)."""
    log.warning("storage_unavailable", path=request.url.path, error=str(exc))
    return problem_response(
        request,
        503,
        detail="The photo store is not answering; retry in a few seconds.",
        headers={"Retry-After": str(STORE_RETRY_AFTER_SECONDS)},
    )


app = create_app()
