"""Errors the gateway makes itself are RFC 9457 problem+json and never show internal addresses.

A real nginx runs the generated config; no service is behind it, so upstream errors are real.
"""

from __future__ import annotations

import socket
from typing import Any

import httpx
import pytest

# The `gateway` fixture (conftest.py): .url, and .dead_ports, service → closed upstream port.
Gateway = Any


PROBLEM = "application/problem+json"


def assert_problem(response: httpx.Response, status: int, gateway: Gateway) -> dict[str, object]:
    assert response.status_code == status
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body["status"] == status and body["title"] and body["type"] == "about:blank"
    assert "<html" not in response.text.lower()
    for port in gateway.dead_ports.values():
        assert str(port) not in response.text  # no upstream address leaks out
    assert "127.0.0.1" not in response.text
    return body


def test_unknown_route_is_a_404_problem(gateway: Gateway) -> None:
    for path in ("/", "/nope", "/api/v1/authx", "/api/v2/auth/healthz"):
        assert_problem(httpx.get(gateway.url + path), 404, gateway)


def test_service_down_is_a_502_problem_naming_the_service(gateway: Gateway) -> None:
    body = assert_problem(httpx.get(gateway.url + "/api/v1/waste/healthz"), 502, gateway)
    assert "waste" in str(body["detail"])


def test_body_over_the_route_limit_is_a_413_problem(gateway: Gateway) -> None:
    # auth allows 64k (proxy-body-size), waste 12m: 100 kB is too much for auth only.
    response = httpx.post(gateway.url + "/api/v1/auth/dev/login", content=b"x" * 100_000)
    assert_problem(response, 413, gateway)
    response = httpx.post(gateway.url + "/api/v1/waste/analyses", content=b"x" * 100_000)
    assert response.status_code == 502  # passed the size check, then found no service


def test_request_id_is_kept_when_plain_and_replaced_when_not(gateway: Gateway) -> None:
    kept = httpx.get(gateway.url + "/nope", headers={"X-Request-ID": "abc-123"})
    assert kept.headers["x-request-id"] == "abc-123" and kept.json()["request_id"] == "abc-123"
    hostile = httpx.get(gateway.url + "/nope", headers={"X-Request-ID": 'a"}, "x": "'})
    body = hostile.json()  # still valid JSON: the header was not echoed into it
    assert body["request_id"] != 'a"}, "x": ' and len(str(body["request_id"])) == 32


@pytest.mark.parametrize("path", ["/api/v1/auth/token"])
def test_over_the_rate_limit_is_a_429_problem(gateway: Gateway, path: str) -> None:
    # auth: limit-rps 10 → burst 50 with nodelay; 80 quick requests must hit the limit.
    with httpx.Client() as client:
        responses = [client.get(gateway.url + path) for _ in range(80)]
    limited = [response for response in responses if response.status_code == 429]
    assert limited, [response.status_code for response in responses]
    assert_problem(limited[0], 429, gateway)
    assert limited[0].headers["retry-after"] == "1"


def raw_request(gateway: Gateway, request_line: bytes) -> httpx.Response:
    """Send a request line httpx would refuse to build, and read the answer with httpx."""
    host, port = gateway.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        connection.sendall(request_line + b"\r\nHost: gateway\r\nConnection: close\r\n\r\n")
        raw = b"".join(iter(lambda: connection.recv(65536), b""))
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = [tuple(line.split(": ", 1)) for line in header_lines]
    return httpx.Response(int(status_line.split()[1]), headers=headers, content=body)


@pytest.mark.parametrize(
    ("request_line", "status"),
    [
        (b"GET /api/v1/users/%00 HTTP/1.1", 400),  # nginx refuses a NUL in the path
        (b"GET /api/v1/recycling/items?q=" + b"a" * 9000 + b" HTTP/1.1", 414),
        (b"CONNECT /api/v1/users/me HTTP/1.1", 400),
        (b"GET /api/v1/users/me HTTP/1.1\r\nX-Big: " + b"x" * 20_000, 400),  # nginx's 494
        (b"GET /api/v1/users/me HTTP/2.5", 505),
    ],
    ids=["nul-in-path", "uri-too-long", "connect", "header-too-large", "http-2.5"],
)
def test_requests_nginx_cannot_parse_are_problems_too(
    gateway: Gateway, request_line: bytes, status: int
) -> None:
    assert_problem(raw_request(gateway, request_line), status, gateway)


def test_error_pages_cannot_be_requested_directly(gateway: Gateway) -> None:
    assert_problem(httpx.get(gateway.url + "/.ecosort-problem/400"), 404, gateway)
