"""Every error path answers problem+json; health is cheap; readiness names what is down."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import timedelta
from http import HTTPStatus

import pytest
from asgi_lifespan import LifespanManager
from fastapi import Request
from httpx import ASGITransport, AsyncClient

from ecosort_common.errors import Problem, problem_response
from ecosort_common.settings import ServiceSettings
from ecosort_common.testing import TokenIssuer, silent_server

from .conftest import build_app

PROBLEM = "application/problem+json"


async def test_problem_raised_by_a_handler(client: AsyncClient) -> None:
    response = await client.get("/api/v1/demo/teapot")
    assert response.status_code == 418
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body["title"] == "I'm a teapot"
    assert body["detail"] == "Short and stout."
    assert body["hint"] == "tip me over"
    assert body["request_id"] == response.headers["x-request-id"]


async def test_validation_error_lists_the_fields(client: AsyncClient) -> None:
    response = await client.post("/api/v1/demo/echo", json={"count": "many"})
    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["errors"][0]["loc"] == ["body", "count"]


async def test_malformed_json_is_problem_json(client: AsyncClient) -> None:
    response = await client.post(
        "/api/v1/demo/echo", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM


@pytest.mark.parametrize("token", ["none", "expired"])
async def test_an_unreadable_body_without_a_valid_token_is_a_401_first(
    client: AsyncClient, token_issuer: TokenIssuer, token: str
) -> None:
    """FastAPI decodes JSON before it checks the token; a client told 422 would not know to
    refresh its token, and the body may have been fine."""
    headers = {"content-type": "application/json"}
    if token == "expired":
        headers["Authorization"] = (
            f"Bearer {token_issuer.token(uuid.uuid4(), lifetime=timedelta(minutes=-1))}"
        )
    response = await client.post("/api/v1/demo/my-echo", content=b"{not json", headers=headers)
    assert (response.status_code, response.headers["content-type"]) == (401, PROBLEM)
    signed_in = {**headers, "Authorization": f"Bearer {token_issuer.token(uuid.uuid4())}"}
    unreadable = await client.post("/api/v1/demo/my-echo", content=b"{not json", headers=signed_in)
    assert unreadable.status_code == 422
    assert unreadable.json()["errors"][0]["type"] == "json_invalid"
    # A route without a token check still says 422 for the body.
    anonymous = await client.post("/api/v1/demo/echo", content=b"{not json", headers=headers)
    assert anonymous.status_code == 422


async def test_unknown_route_and_wrong_method(client: AsyncClient) -> None:
    missing = await client.get("/api/v1/demo/nothing-here")
    assert (missing.status_code, missing.headers["content-type"]) == (404, PROBLEM)
    wrong = await client.delete("/api/v1/demo/echo")
    assert (wrong.status_code, wrong.headers["content-type"]) == (405, PROBLEM)
    # Not a redirect to an absolute URL made from the request's Host header.
    slash = await client.get("/api/v1/demo/teapot/", headers={"Host": "evil.example"})
    assert (slash.status_code, slash.headers["content-type"]) == (404, PROBLEM)


async def test_unexpected_error_hides_internals(client: AsyncClient) -> None:
    response = await client.get("/api/v1/demo/boom")
    assert response.status_code == 500
    assert response.headers["content-type"] == PROBLEM
    assert "10.0.0.5" not in response.text
    assert "Traceback" not in response.text


async def test_request_id_is_kept_or_made(client: AsyncClient) -> None:
    kept = await client.get("/healthz", headers={"x-request-id": "abc-123"})
    assert kept.headers["x-request-id"] == "abc-123"
    # What the gateway keeps (nginx_conf.py: letters, digits and `._:-`) is kept here too.
    dotted = await client.get("/healthz", headers={"x-request-id": "trace.1:ab-2"})
    assert dotted.headers["x-request-id"] == "trace.1:ab-2"
    made = await client.get("/healthz", headers={"x-request-id": "bad id\n"})
    assert made.headers["x-request-id"] not in ("", "bad id\n")
    # Letters outside ASCII are not a plain token (and would be re-encoded in the header).
    latin = await client.get("/healthz", headers={"x-request-id": b"caf\xe9"})
    assert latin.headers["x-request-id"].isascii()


async def test_metrics_use_route_templates(client: AsyncClient) -> None:
    await client.post("/api/v1/demo/echo", json={"count": 1})
    metrics = (await client.get("/metrics")).text
    assert 'route="/api/v1/demo/echo"' in metrics
    assert "http_request_duration_seconds_bucket" in metrics


@pytest.mark.parametrize("method", ["GET", "HEAD"])
async def test_metrics_are_not_under_the_prefix_the_ingress_forwards(
    client: AsyncClient, method: str
) -> None:
    assert (await client.request(method, "/metrics")).status_code == 200
    prefixed = await client.request(method, "/api/v1/demo/metrics")
    assert (prefixed.status_code, prefixed.headers["content-type"]) == (404, PROBLEM)
    assert "http_request" not in prefixed.text
    # Health stays under the prefix: the gateway's checks call it there.
    assert (await client.request(method, "/api/v1/demo/healthz")).status_code == 200


async def test_ready_when_dependencies_answer(client: AsyncClient) -> None:
    response = await client.get("/api/v1/demo/readyz")
    assert response.status_code == 200
    assert response.json()["dependencies"] == {"database": True, "redis": True}


async def test_unreachable_database_starts_alive_but_not_ready(settings: ServiceSettings) -> None:
    broken = settings.model_copy(
        update={
            "database_url": "postgresql+psycopg://nobody@127.0.0.1:9/nowhere",
            "outbox_relay_enabled": True,
            "outbox_poll_seconds": 0.05,
        }
    )
    app = build_app(broken)
    async with LifespanManager(app):
        transport = ASGITransport(app=app)
        async with AsyncClient(transport=transport, base_url="http://test") as http:
            assert (await http.get("/healthz")).status_code == 200
            ready = await http.get("/readyz")
            assert ready.status_code == 503
            assert ready.headers["content-type"] == PROBLEM
            body = ready.json()
            assert body["dependencies"] == {"database": False, "redis": True}
            assert "database" in body["detail"]
            assert body["type"] == "urn:ecosort:problem:not-ready"
            assert "127.0.0.1:9" not in ready.text


async def test_unreachable_redis_is_named(settings: ServiceSettings) -> None:
    broken = settings.model_copy(update={"redis_url": "redis://127.0.0.1:9/0"})
    app = build_app(broken)
    async with LifespanManager(app):
        transport = ASGITransport(app=app)
        async with AsyncClient(transport=transport, base_url="http://test") as http:
            ready = await http.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["dependencies"] == {"database": True, "redis": False}


@pytest.mark.parametrize(
    ("store", "path"),
    [
        ({"redis_url": "redis://127.0.0.1:9/0"}, "/api/v1/demo/me"),  # the revocation check
        ({"database_url": "postgresql+psycopg://nobody@127.0.0.1:9/nowhere"}, "/api/v1/demo/rows"),
    ],
    ids=["redis", "postgresql"],
)
async def test_a_store_that_is_down_is_a_503_to_retry(
    settings: ServiceSettings, token_issuer: TokenIssuer, store: dict[str, str], path: str
) -> None:
    """Not a 500: the request was fine and may succeed in a moment, which Retry-After says."""
    app = build_app(settings.model_copy(update=store))
    async with LifespanManager(app):
        transport = ASGITransport(app=app, raise_app_exceptions=False)
        async with AsyncClient(transport=transport, base_url="http://test") as http:
            token = token_issuer.token(uuid.uuid4())
            response = await http.get(path, headers={"Authorization": f"Bearer {token}"})
    assert (response.status_code, response.headers["content-type"]) == (503, PROBLEM)
    assert int(response.headers["retry-after"]) > 0
    assert "127.0.0.1" not in response.text and ":9" not in response.text


async def test_a_hung_redis_is_a_503_within_the_request_deadline(
    settings: ServiceSettings, token_issuer: TokenIssuer
) -> None:
    """A Redis that accepts the connection and never answers used to hold every request that
    checked a token for as long as it hung; and the app must still shut down."""
    with silent_server() as address:
        hung = settings.model_copy(
            update={"redis_url": f"redis://{address}/0", "request_deadline_seconds": 0.5}
        )
        app = build_app(hung)
        async with asyncio.timeout(20), LifespanManager(app):
            transport = ASGITransport(app=app, raise_app_exceptions=False)
            async with AsyncClient(transport=transport, base_url="http://test") as http:
                token = token_issuer.token(uuid.uuid4())
                started = time.monotonic()
                response = await http.get(
                    "/api/v1/demo/me", headers={"Authorization": f"Bearer {token}"}
                )
                waited = time.monotonic() - started
    assert (response.status_code, response.headers["content-type"]) == (503, PROBLEM)
    assert int(response.headers["retry-after"]) > 0
    assert waited < 5, waited


async def test_a_statement_the_database_refuses_is_a_500_not_an_outage(
    client: AsyncClient,
) -> None:
    """psycopg files "program limit exceeded" under OperationalError, as it does a lost
    connection; retrying it would fail the same way, so no Retry-After."""
    response = await client.get("/api/v1/demo/too-big")
    assert (response.status_code, response.headers["content-type"]) == (500, PROBLEM)
    assert "retry-after" not in response.headers


def test_plain_postgres_urls_use_psycopg() -> None:
    settings = ServiceSettings(database_url="postgresql://u@h:5432/d")
    assert settings.database_url == "postgresql+psycopg://u@h:5432/d"


def _request(path: str = "/somewhere") -> Request:
    return Request({"type": "http", "method": "GET", "path": path, "headers": []})


@pytest.mark.parametrize(
    ("status", "title", "type_"),
    [
        (404, "Analysis not found", "urn:ecosort:problem:analysis-not-found"),
        (401, "Sign-in refused", "urn:ecosort:problem:sign-in-refused"),
        (400, "Bad redirect_uri", "urn:ecosort:problem:bad-redirect-uri"),
        (422, "Idempotency-Key reused", "urn:ecosort:problem:idempotency-key-reused"),
    ],
)
def test_a_title_of_its_own_never_sits_under_about_blank(
    status: int, title: str, type_: str
) -> None:
    raised = Problem(status, "Some detail.", title=title)
    assert (raised.type, raised.title) == (type_, title)
    assert Problem(status, title=title, type_="about:blank").type == type_
    body = json.loads(problem_response(_request(), status, title=title).body)
    assert (body["type"], body["title"]) == (type_, title)


@pytest.mark.parametrize(
    ("status", "title", "sent_title"),
    [
        (404, None, "Not Found"),
        (429, "Too many requests", "Too many requests"),
        # No letter to name a type by: the plain status, not a bare "urn:ecosort:problem:".
        (404, "분석 없음", "Not Found"),
    ],
)
def test_no_title_of_its_own_is_about_blank_and_the_status_phrase(
    status: int, title: str | None, sent_title: str
) -> None:
    raised = Problem(status, "Some detail.", title=title)
    assert (raised.type, raised.title) == ("about:blank", sent_title)
    body = json.loads(problem_response(_request(), status, title=title).body)
    assert (body["type"], body["title"]) == ("about:blank", sent_title)


def test_an_explicit_type_is_kept() -> None:
    reused = "urn:ecosort:auth:refresh-reused"
    raised = Problem(401, title="Refresh token refused", type_=reused)
    assert (raised.type, raised.title) == (reused, "Refresh token refused")
    body = json.loads(problem_response(_request(), 400, type_="urn:example:odd").body)
    assert (body["type"], body["title"]) == ("urn:example:odd", "Bad Request")


@pytest.mark.parametrize(
    ("method", "path", "type_"),
    [
        ("GET", "/api/v1/demo/me", "urn:ecosort:problem:authentication-required"),  # Problem
        ("GET", "/api/v1/demo/teapot", "about:blank"),  # "I'm a teapot" is 418's phrase
        ("POST", "/api/v1/demo/echo", "urn:ecosort:problem:request-validation-failed"),
        ("GET", "/api/v1/demo/notes/7", "about:blank"),  # Problem without a title
        ("GET", "/api/v1/demo/nothing-here", "about:blank"),  # Starlette's 404
        ("DELETE", "/api/v1/demo/echo", "about:blank"),  # Starlette's 405
        ("GET", "/api/v1/demo/boom", "about:blank"),  # the unexpected
    ],
)
async def test_every_error_path_follows_the_about_blank_rule(
    client: AsyncClient, method: str, path: str, type_: str
) -> None:
    response = await client.request(method, path, json={"count": "many"})
    body = response.json()
    assert body["type"] == type_
    if type_ == "about:blank":
        assert body["title"].casefold() == HTTPStatus(response.status_code).phrase.casefold()
