"""What the gateway tells the services about the client: a real nginx runs the generated config
in front of a backend that records the headers it is sent."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from ecosort_devstack.config import SERVICE_PORTS

from .conftest import generated_gateway


class _EchoHeaders(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps([[name, value] for name, value in self.headers.items()]).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def gateway_to_echo(nginx: Path) -> Iterator[str]:
    """The generated gateway, every service's upstream the header-echoing backend."""
    backend = ThreadingHTTPServer(("127.0.0.1", 0), _EchoHeaders)
    threading.Thread(target=backend.serve_forever, daemon=True).start()
    try:
        with generated_gateway(
            nginx, dict.fromkeys(SERVICE_PORTS, backend.server_address[1])
        ) as url:
            yield url
    finally:
        backend.shutdown()
        backend.server_close()


def client_seen_by_service(headers: list[tuple[str, str]]) -> str:
    """The client address a local service's uvicorn (--proxy-headers, trusting the gateway at
    127.0.0.1) hands the app for a request the gateway sent with `headers`."""
    seen: dict[str, str] = {}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen["client"] = scope["client"][0]

    scope = {
        "type": "http",
        "client": ("127.0.0.1", 40000),
        "headers": [(name.lower().encode(), value.encode()) for name, value in headers],
    }
    asyncio.run(ProxyHeadersMiddleware(app, trusted_hosts="127.0.0.1")(scope, None, None))
    return seen["client"]


def test_a_client_cannot_choose_the_address_the_services_see(gateway_to_echo: str) -> None:
    """Auth's per-IP sign-in and refresh limits key on this address: a client that could write
    it through the gateway would get a fresh limit with every request."""
    response = httpx.get(
        gateway_to_echo + "/api/v1/auth/providers",
        headers={"X-Forwarded-For": "198.51.100.66", "X-Real-IP": "198.51.100.67"},
    )
    assert response.status_code == 200, response.text
    sent = [(name, value) for name, value in response.json()]
    assert "198.51.100" not in json.dumps(sent)
    assert client_seen_by_service(sent) == "127.0.0.1"
