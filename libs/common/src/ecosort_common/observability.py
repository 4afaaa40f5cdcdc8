"""Request ids, access logs and per-route Prometheus latency, as one pure ASGI middleware."""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

import structlog
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUEST_LATENCY = Histogram(
    "http_request_duration_seconds",
    "HTTP request latency by route template.",
    ["service", "method", "route", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
REQUESTS = Counter(
    "http_requests_total",
    "HTTP requests by route template.",
    ["service", "method", "route", "status"],
)
REQUEST_ID_HEADER = "x-request-id"
log = structlog.get_logger("ecosort.access")
_QUIET_NAMES = ("healthz", "readyz", "metrics")


class RouteTemplates:
    """Maps a request path to its route template (`/analyses/{analysis_id}`), so metrics do not
    explode with ids. Built once from the app's OpenAPI paths plus the health routes, because
    routers included with a prefix only know their own relative paths."""

    def __init__(self) -> None:
        self._patterns: list[tuple[re.Pattern[str], str]] | None = None

    def _build(self, app: Any) -> list[tuple[re.Pattern[str], str]]:
        prefix = app.state.settings.api_prefix
        paths = list(app.openapi().get("paths", {}))
        paths += [f"{base}/{name}" for base in ("", prefix) for name in _QUIET_NAMES]
        return [(compile_path(path)[0], path) for path in paths]

    def lookup(self, scope: Scope) -> str:
        if self._patterns is None:
            self._patterns = self._build(scope["app"])
        path = scope["path"]
        for pattern, template in self._patterns:
            if pattern.match(path):
                return template
        return "unmatched"


# The gateway's rule (ecosort_devstack.nginx_conf): an id it keeps must be kept here too, or
# the gateway's access log and the answer would name the request differently.
_PLAIN_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def _valid_request_id(value: str | None) -> str:
    if value and _PLAIN_REQUEST_ID.fullmatch(value):
        return value
    return uuid.uuid4().hex


class ObservabilityMiddleware:
    def __init__(self, app: ASGIApp, service: str) -> None:
        self.app = app
        self.service = service
        self.routes = RouteTemplates()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or ())
        incoming = headers.get(REQUEST_ID_HEADER.encode())
        request_id = _valid_request_id(incoming.decode("latin-1") if incoming else None)
        scope.setdefault("state", {})["request_id"] = request_id
        status_holder = {"status": 500}
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [
                    *message["headers"],
                    (REQUEST_ID_HEADER.encode(), request_id.encode()),
                ]
            await send(message)

        # Restored, not unbound, at the end: a request served in-process inside another one (auth
        # reads its own JWKS through an ASGI transport) must leave the outer one its id.
        bound = structlog.contextvars.bind_contextvars(request_id=request_id)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = self.routes.lookup(scope)
            labels = (self.service, scope["method"], route, str(status_holder["status"]))
            REQUEST_LATENCY.labels(*labels).observe(elapsed)
            REQUESTS.labels(*labels).inc()
            if route.rpartition("/")[2] not in _QUIET_NAMES:
                log.info(
                    "request",
                    method=scope["method"],
                    path=scope["path"],
                    route=route,
                    status=status_holder["status"],
                    duration_ms=round(elapsed * 1000, 2),
                )
            structlog.contextvars.reset_contextvars(**bound)


async def metrics_endpoint(_: Request) -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
