"""The whole local stack, through its gateway, as `make run` starts it."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from ecosort_devstack.config import SERVICE_PORTS

if TYPE_CHECKING:
    from tests.conftest import LocalStack

PROBLEM = "application/problem+json"
SERVICES = list(SERVICE_PORTS)


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body: dict[str, Any] = response.json()
    assert body["status"] == status and body["title"]
    assert "Traceback" not in response.text and "<html" not in response.text.lower()
    return body


@pytest.mark.parametrize("service", SERVICES)
def test_healthz_of_every_service_through_the_gateway(gateway_url: str, service: str) -> None:
    response = httpx.get(f"{gateway_url}/api/v1/{service}/healthz")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


@pytest.mark.parametrize("service", SERVICES)
def test_every_service_is_ready_on_its_migrated_database(gateway_url: str, service: str) -> None:
    response = httpx.get(f"{gateway_url}/api/v1/{service}/readyz")
    assert response.status_code == 200, response.text
    assert response.json()["dependencies"] == {"database": True, "redis": True}


def test_unknown_route_outside_every_service_is_problem_json(gateway_url: str) -> None:
    assert_problem(httpx.get(f"{gateway_url}/api/v2/nothing"), 404)


def test_unknown_route_inside_a_service_is_problem_json(gateway_url: str) -> None:
    body = assert_problem(httpx.get(f"{gateway_url}/api/v1/users/no-such-thing"), 404)
    assert body["instance"] == "/api/v1/users/no-such-thing"


def test_validation_error_through_the_gateway_is_problem_json(gateway_url: str) -> None:
    response = httpx.post(f"{gateway_url}/api/v1/auth/dev/login", json={"nickname": 42})
    body = assert_problem(response, 422)
    assert body["errors"], body


def test_request_id_travels_through_gateway_and_service(gateway_url: str) -> None:
    response = httpx.get(
        f"{gateway_url}/api/v1/users/no-such-thing", headers={"X-Request-ID": "e2e-trace-1"}
    )
    assert response.headers["x-request-id"] == "e2e-trace-1"
    assert response.json()["request_id"] == "e2e-trace-1"


@pytest.mark.parametrize("request_id", ["e2e.trace-2", "e2e:trace:3"])
def test_every_request_id_the_gateway_keeps_the_service_keeps_too(
    gateway_url: str, request_id: str
) -> None:
    """nginx keeps a client's X-Request-ID made of letters, digits and `._:-` (and logs the
    request under it); the service must answer under that same id, not a new one of its own."""
    response = httpx.get(
        f"{gateway_url}/api/v1/waste/no-such-thing", headers={"X-Request-ID": request_id}
    )
    assert_problem(response, 404)
    assert response.headers["x-request-id"] == request_id
    assert response.json()["request_id"] == request_id


def test_gateway_body_limit_comes_from_the_ingress(gateway_url: str) -> None:
    # auth's Ingress allows 64k: nginx refuses more before the service sees it.
    response = httpx.post(f"{gateway_url}/api/v1/auth/dev/login", content=b"{" * 70_000)
    assert_problem(response, 413)


def test_exec_runs_a_command_with_the_running_services_settings(local_stack: LocalStack) -> None:
    """`make train-head` reads corrections through `ecosort-stack exec waste`: it must reach the
    database and folders the running worker uses, not the settings' defaults."""
    (worker,) = [record for record in local_stack.records if record.name == "worker"]
    running = _environment_of(worker.pid)
    printed = local_stack.exec("waste", sys.executable, "-c", PRINT_SETTINGS)
    assert printed.returncode == 0, printed.stderr
    settings = json.loads(printed.stdout)
    assert settings == {name: running.get(name) for name in SHARED_SETTINGS}
    assert settings["DATABASE_URL"] and settings["DATA_DIR"]


SHARED_SETTINGS = (
    "DATABASE_URL",
    "REDIS_URL",
    "DATA_DIR",
    "CLASSIFIER_HEADS_DIR",
    "STORAGE_BACKEND",
)
PRINT_SETTINGS = (
    f"import json, os; print(json.dumps({{n: os.environ.get(n) for n in {SHARED_SETTINGS!r}}}))"
)


def _environment_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    pairs = (entry.split(b"=", 1) for entry in raw.split(b"\0") if b"=" in entry)
    return {name.decode(): value.decode() for name, value in pairs}
