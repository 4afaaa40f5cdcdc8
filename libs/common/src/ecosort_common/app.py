"""The one call every service makes at start-up (the service defaults)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI
from sqlalchemy import Table

from ecosort_common.aio import cancel_and_wait
from ecosort_common.caching import NoStoreByDefaultMiddleware
from ecosort_common.db import create_engine, create_sessionmaker
from ecosort_common.deadline import RequestDeadlineMiddleware
from ecosort_common.errors import install_error_handlers
from ecosort_common.events import EventConsumer, Handler
from ecosort_common.head import HeadMiddleware
from ecosort_common.health import DEFAULT_CHECKS, ReadinessCheck, health_router, metrics_router
from ecosort_common.ingress_errors import ingress_errors_router
from ecosort_common.logging import configure_logging
from ecosort_common.observability import ObservabilityMiddleware
from ecosort_common.openapi import ROUTER_RESPONSES, install_openapi
from ecosort_common.outbox import OutboxRelay
from ecosort_common.redis import create_background_redis, create_redis
from ecosort_common.revocation import RevocationWatcher
from ecosort_common.security import TokenVerifier
from ecosort_common.settings import ServiceSettings
from ecosort_common.subscription import Subscription

# A hook receives the app once its engine, sessionmaker, redis and verifier exist; it may return
# a coroutine to run in the background for the app's lifetime, or None.
StartupHook = Callable[[FastAPI], Awaitable[Awaitable[None] | None]]


def create_service_app(
    settings: ServiceSettings,
    *,
    title: str,
    description: str = "",
    routers: Sequence[APIRouter] = (),
    outbox: Table | None = None,
    consumers: dict[str, Handler] | None = None,
    processed_events: Table | None = None,
    readiness_checks: dict[str, ReadinessCheck] | None = None,
    on_startup: Sequence[StartupHook] = (),
    on_shutdown: Sequence[Callable[[FastAPI], Awaitable[None]]] = (),
) -> FastAPI:
    """Build a FastAPI app with health, metrics, problem+json errors, HEAD wherever GET is, request
    ids, JSON logs, `Cache-Control: no-store` where a route sets none, the database and Redis
    clients, token verification, the outbox relay and event consumers."""
    configure_logging(settings.log_level, json=settings.log_json)
    prefix = settings.api_prefix

    if consumers and processed_events is None:
        raise ValueError("consumers need a processed_events table for idempotency")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.settings = settings
        async with AsyncExitStack() as stack:
            app.state.engine = create_engine(
                settings.database_url,
                pool_size=settings.database_pool_size,
                connect_timeout=settings.database_connect_timeout_seconds,
            )
            stack.push_async_callback(app.state.engine.dispose)
            app.state.sessionmaker = create_sessionmaker(app.state.engine)
            app.state.redis = create_redis(settings.redis_url)
            stack.push_async_callback(app.state.redis.aclose)
            app.state.subscription = Subscription(app.state.redis)
            app.state.revocations = RevocationWatcher(app.state.redis, app.state.subscription)
            app.state.token_verifier = TokenVerifier(
                jwks_url=settings.jwks_url,
                issuer=settings.jwt_issuer,
                audience=settings.jwt_audience,
                cache_seconds=settings.jwks_cache_seconds,
                revocations=app.state.revocations,
            )
            # A hook may replace the verifier (auth does): close whichever one is in place.
            stack.push_async_callback(lambda: app.state.token_verifier.aclose())
            background: list[Awaitable[Any]] = []
            for hook in on_startup:
                task = await hook(app)
                if task is not None:
                    background.append(task)
            background.append(app.state.subscription.run())  # the hooks may add channels
            # Built after the hooks: a hook that refuses to start leaves no coroutine behind.
            events_redis = create_background_redis(settings.redis_url)
            stack.push_async_callback(events_redis.aclose)
            if outbox is not None and settings.outbox_relay_enabled:
                relay = OutboxRelay(
                    outbox,
                    app.state.sessionmaker,
                    events_redis,
                    source=settings.service_name,
                    poll_seconds=settings.outbox_poll_seconds,
                )
                background.append(relay.run())
            if consumers and processed_events is not None and settings.event_consumers_enabled:
                consumer = EventConsumer(
                    redis=events_redis,
                    sessionmaker=app.state.sessionmaker,
                    processed=processed_events,
                    group=settings.service_name,
                    handlers=consumers,
                )
                background.append(consumer.run())
            tasks = [asyncio.create_task(_as_coroutine(job)) for job in background]
            try:
                yield
            finally:
                await cancel_and_wait(*tasks)
                for shutdown in on_shutdown:
                    await shutdown(app)

    app = FastAPI(
        title=title,
        description=description,
        version="1.0.0",
        lifespan=lifespan,
        openapi_url=f"{prefix}/openapi.json",
        docs_url=f"{prefix}/docs",
        redoc_url=None,
        # `/analyses/` is not `/analyses`: a 404 problem, not a redirect to an absolute URL
        # built from whatever Host the request named.
        redirect_slashes=False,
    )
    app.state.settings = settings
    install_error_handlers(app)
    install_openapi(app)
    # Inside the HEAD and observability middlewares: a deadline's 503 is logged and counted,
    # and HEAD's is GET's.
    app.add_middleware(RequestDeadlineMiddleware, seconds=settings.request_deadline_seconds)
    # Outside the deadline: its 503 is no more to be stored than the answers it cuts short.
    app.add_middleware(NoStoreByDefaultMiddleware)
    # Inside the observability middleware: the access log and metrics say HEAD, not GET.
    app.add_middleware(HeadMiddleware)
    app.add_middleware(ObservabilityMiddleware, service=settings.service_name)
    checks = readiness_checks if readiness_checks is not None else DEFAULT_CHECKS
    health = health_router(checks, settings.readiness_timeout_seconds)
    app.include_router(health, responses=ROUTER_RESPONSES)
    # Health under the prefix too, for checks through the gateway. /metrics only at the root:
    # the ingress forwards the whole prefix to anyone, the root path stays on the pod's port.
    app.include_router(health, prefix=prefix, include_in_schema=False)
    app.include_router(metrics_router())
    app.include_router(ingress_errors_router())
    for router in routers:
        app.include_router(router, prefix=prefix, responses=ROUTER_RESPONSES)
    return app


async def _as_coroutine(job: Awaitable[Any]) -> Any:
    return await job
