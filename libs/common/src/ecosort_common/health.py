"""/healthz (alive: no I/O) and /readyz (this service's dependencies answer), and /metrics."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy import text

from ecosort_common.errors import problem_response
from ecosort_common.observability import metrics_endpoint

ReadinessCheck = Callable[[Request], Awaitable[None]]


async def database_ready(request: Request) -> None:
    async with request.app.state.engine.connect() as connection:
        await connection.execute(text("SELECT 1"))


async def redis_ready(request: Request) -> None:
    await request.app.state.redis.ping()


DEFAULT_CHECKS: dict[str, ReadinessCheck] = {"database": database_ready, "redis": redis_ready}


def health_router(checks: dict[str, ReadinessCheck], timeout: float) -> APIRouter:
    router = APIRouter(tags=["health"])

    @router.get("/healthz", summary="Liveness: the process answers")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/readyz", summary="Readiness: the database and Redis answer", response_model=None)
    async def readyz(request: Request) -> Response:
        names = list(checks)
        results = await asyncio.gather(
            *(asyncio.wait_for(checks[name](request), timeout) for name in names),
            return_exceptions=True,
        )
        failed = [name for name, result in zip(names, results, strict=True) if result is not None]
        if failed:
            return problem_response(
                request,
                503,
                title="Not ready",
                detail=f"Unavailable: {', '.join(failed)}.",
                dependencies={name: name not in failed for name in names},
            )
        return JSONResponse({"status": "ready", "dependencies": dict.fromkeys(names, True)})

    return router


def metrics_router() -> APIRouter:
    """Prometheus metrics, for the root path only: the ingress forwards each service's whole
    API prefix to the world, and the counters are for the scraper the NetworkPolicy lets in."""
    router = APIRouter(tags=["health"])
    router.add_api_route("/metrics", metrics_endpoint, include_in_schema=False)
    return router
