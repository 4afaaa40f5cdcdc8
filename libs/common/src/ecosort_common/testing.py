"""Test support every service's conftest uses: a throw-away database per test run, a Redis
database number of its own, and a real local issuer of access tokens with a JWKS over HTTP."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import psycopg
import redis as redis_sync
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet

from ecosort_common.errors import PROBLEM_JSON
from ecosort_common.settings import async_database_url

POSTGRES_ENV = "ECOSORT_TEST_POSTGRES_URL"
REDIS_ENV = "ECOSORT_TEST_REDIS_URL"
DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"
TEST_ISSUER = "http://ecosort.test"
TEST_AUDIENCE = "ecosort"


def admin_postgres_url() -> str:
    return os.environ.get(POSTGRES_ENV, DEFAULT_POSTGRES).replace("+psycopg", "")


def _with_database(url: str, database: str) -> str:
    base, _, _ = url.rpartition("/")
    return f"{base}/{database}"


@contextmanager
def temporary_database(prefix: str) -> Iterator[str]:
    """Create a fresh database and yield its SQLAlchemy URL; drop it afterwards."""
    admin = admin_postgres_url()
    name = f"test_{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield async_database_url(_with_database(admin, name))
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def temporary_redis_db(lease_seconds: int = 1800) -> Iterator[str]:
    """Lease one of Redis databases 1-15 (database 0 holds the leases) and flush it around use,
    so concurrent test runs never see each other's keys."""
    base = os.environ.get(REDIS_ENV, DEFAULT_REDIS)
    root, _, _ = base.rpartition("/")
    leases = redis_sync.Redis.from_url(f"{root}/0")
    token = uuid.uuid4().hex
    deadline = time.monotonic() + 120
    while True:
        for number in range(1, 16):
            if leases.set(f"ecosort:test-redis-lease:{number}", token, nx=True, ex=lease_seconds):
                url = f"{root}/{number}"
                client = redis_sync.Redis.from_url(url)
                client.flushdb()
                try:
                    yield url
                finally:
                    client.flushdb()
                    client.close()
                    if leases.get(f"ecosort:test-redis-lease:{number}") == token.encode():
                        leases.delete(f"ecosort:test-redis-lease:{number}")
                    leases.close()
                return
        if time.monotonic() > deadline:
            raise RuntimeError("no free Redis test database (1-15) within 120 s")
        time.sleep(0.5)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def silent_server() -> Iterator[str]:
    """`host:port` of a server that accepts connections and never answers: a store that hung
    (or a failover that blackholes its old address), as no closed port can show."""
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                held.append(listener.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join()
        for connection in held:
            connection.close()
        listener.close()


@contextmanager
def silencing_proxy(target: tuple[str, int]) -> Iterator[tuple[int, Callable[[], None]]]:
    """A TCP proxy to `target` and a function that silences every connection open through it
    at that moment: what is sent on them is never passed on nor answered (their kernels still
    acknowledge, so no TCP timeout fires), as after a failover or on a half-open connection.
    Connections made later get through."""
    listener = socket.create_server(("127.0.0.1", 0))
    sockets: list[socket.socket] = [listener]
    silenced: set[socket.socket] = set()

    def pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if source not in silenced and sink not in silenced:
                    sink.sendall(data)

    def accept() -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = listener.accept()
                upstream = socket.create_connection(target)
                sockets.extend((client, upstream))
                threading.Thread(target=pump, args=(client, upstream), daemon=True).start()
                threading.Thread(target=pump, args=(upstream, client), daemon=True).start()

    def silence() -> None:
        silenced.update(sockets[1:])

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield listener.getsockname()[1], silence
    finally:
        for sock in sockets:
            sock.close()


class TokenIssuer:
    """Signs access tokens the way auth does (ES256, kid, iss/aud/sub/sid/jti/exp) and serves
    the JWKS over real HTTP, so services are tested through their production verifier."""

    def __init__(self, issuer: str = TEST_ISSUER, audience: str = TEST_AUDIENCE) -> None:
        self.issuer = issuer
        self.audience = audience
        self.key = ECKey.generate_key("P-256", parameters={"kid": uuid.uuid4().hex[:16]})
        self.port = free_port()
        self._server: ThreadingHTTPServer | None = None

    @property
    def kid(self) -> str:
        return str(self.key.kid)

    @property
    def jwks_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/jwks.json"

    def jwks(self) -> dict[str, Any]:
        return dict(KeySet([self.key]).as_dict(private=False))

    def token(
        self,
        user_id: uuid.UUID | None = None,
        *,
        session_id: str | None = None,
        lifetime: timedelta = timedelta(minutes=15),
        **overrides: Any,
    ) -> str:
        now = datetime.now(UTC)
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": str(user_id or uuid.uuid4()),
            "sid": session_id or uuid.uuid4().hex,
            "jti": uuid.uuid4().hex,
            "iat": int(now.timestamp()),
            "exp": int((now + lifetime).timestamp()),
        }
        claims.update(overrides)
        return jwt.encode({"alg": "ES256", "kid": self.kid}, claims, self.key)

    def start(self) -> TokenIssuer:
        body = json.dumps(self.jwks()).encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


def service_fixtures(package: str, settings_cls: Any, create_app: Any) -> tuple[Any, ...]:
    """The fixtures every service's conftest exposes, bound there as
    `token_issuer, settings, app, client = service_fixtures(...)`:
    a migrated throw-away database, a leased Redis database, a running app (lifespan and all)
    and an httpx client speaking ASGI to it."""
    import pytest
    from asgi_lifespan import LifespanManager
    from httpx import ASGITransport, AsyncClient

    from ecosort_common.migrations import upgrade

    short = package.removeprefix("ecosort_")

    @pytest.fixture(scope="session")
    def token_issuer() -> Iterator[TokenIssuer]:
        issuer = TokenIssuer().start()
        yield issuer
        issuer.stop()

    @pytest.fixture(scope="session")
    def settings(token_issuer: TokenIssuer) -> Iterator[Any]:
        with temporary_database(short) as database_url, temporary_redis_db() as redis_url:
            upgrade(package, database_url)
            yield settings_cls(
                database_url=database_url,
                redis_url=redis_url,
                jwks_url=token_issuer.jwks_url,
                jwt_issuer=token_issuer.issuer,
                jwt_audience=token_issuer.audience,
                log_json=False,
                log_level="warning",
            )

    @pytest.fixture(scope="session")
    async def app(settings: Any) -> Any:
        application = create_app(settings)
        async with LifespanManager(application, startup_timeout=30):
            yield application

    @pytest.fixture
    async def client(app: Any) -> Any:
        async with AsyncClient(transport=ASGITransport(app=app), base_url="http://test") as http:
            yield http

    return token_issuer, settings, app, client


async def check_service_defaults(client: Any, service: str) -> None:
    """What every service promises (DESIGN.md §4): health and readiness at its root and under
    its prefix, Prometheus metrics at its root only (the ingress forwards the prefix to anyone),
    its OpenAPI document, and problem+json for unknown routes."""
    prefix = f"/api/v1/{service}"
    for path in ("/healthz", f"{prefix}/healthz"):
        assert (await client.get(path)).json() == {"status": "ok"}
    for path in ("/readyz", f"{prefix}/readyz"):
        ready = await client.get(path)
        assert ready.status_code == 200, ready.text
        assert ready.json()["dependencies"] == {"database": True, "redis": True}
    assert "http_request_duration_seconds" in (await client.get("/metrics")).text
    assert (await client.get(f"{prefix}/metrics")).status_code == 404
    document = (await client.get(f"{prefix}/openapi.json")).json()
    assert document["info"]["title"] == f"EcoSort {service}"
    check_documented_errors(document)
    missing = await client.get(f"{prefix}/no-such-thing")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    assert missing.json()["status"] == 404


def check_documented_errors(document: dict[str, Any]) -> None:
    """The OpenAPI document describes errors as they are sent (ecosort_common.openapi): only
    problem+json, never FastAPI's HTTPValidationError, a 401 wherever a token is needed and a
    400 wherever a body is taken."""
    assert "HTTPValidationError" not in json.dumps(document)
    schemes = document.get("components", {}).get("securitySchemes", {})
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            where = f"{method.upper()} {path}"
            for status, response in operation["responses"].items():
                if status[0] in "45" or status == "default":
                    assert list(response["content"]) == [PROBLEM_JSON], where
            if operation.get("security"):
                assert "401" in operation["responses"], where
                for requirement in operation["security"]:
                    assert all(schemes[name]["scheme"] == "bearer" for name in requirement)
            if "requestBody" in operation:
                assert "400" in operation["responses"], where  # check_unreadable_body


# JSON in bytes that are not UTF-8: FastAPI cannot decode it at all and answers a 400 of its
# own, before any validation (a 422) and before the route's dependencies (a 401).
UNREADABLE_JSON = b'{"text": "\xa5"}'


async def check_unreadable_body(
    client: Any,
    method: str,
    path: str,
    *,
    documented_as: str | None = None,
    headers: dict[str, str] | None = None,
) -> None:
    """A body that cannot be read is a 400 problem, and the OpenAPI document of the operation
    says so: a generated client has no type for a status the document leaves to `default`.
    `documented_as` is the path template when `path` fills in path parameters."""
    response = await client.request(
        method,
        path,
        content=UNREADABLE_JSON,
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    prefix = "/".join(path.split("/")[:4])  # /api/v1/<service>
    document = (await client.get(f"{prefix}/openapi.json")).json()
    operation = document["paths"][documented_as or path][method.lower()]
    assert "400" in operation["responses"], f"{method} {documented_as or path}"


def problem_schema_name(response: dict[str, Any]) -> str:
    """The schema an OpenAPI error response names: its only content must be problem+json."""
    assert list(response["content"]) == [PROBLEM_JSON]
    ref: str = response["content"][PROBLEM_JSON]["schema"]["$ref"]
    return ref.removeprefix("#/components/schemas/")
