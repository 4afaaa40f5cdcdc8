"""The probes and ports the charts declare exist in the applications and images."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest
from starlette.routing import Match

from ecosort_k8scheck.charts import Rendered, of_kind
from ecosort_k8scheck.paths import SERVICES

CONTAINER_PORT = 8000  # docs/conventions.md


def app_serves_get(service: str, path: str) -> bool:
    """Whether the service's ASGI app routes `GET path` (Starlette's own matching, so routers
    included with prefixes count as they do at run time)."""
    app = importlib.import_module(f"ecosort_{service}.main").app
    scope = {"type": "http", "method": "GET", "path": path, "root_path": "", "headers": []}
    return any(route.matches(scope)[0] is Match.FULL for route in app.router.routes)


def test_route_matching_can_fail() -> None:
    assert not app_serves_get("users", "/no-such-probe")


@pytest.mark.parametrize("service", SERVICES)
def test_http_probes_hit_routes_the_app_serves(service: str, rendered: Rendered) -> None:
    for env in ("dev", "prod"):
        (api,) = [
            d
            for d in of_kind(rendered[(service, env)], "Deployment")
            if d["metadata"]["name"] == service
        ]
        container = api["spec"]["template"]["spec"]["containers"][0]
        probes = {
            name: container[name] for name in ("startupProbe", "livenessProbe", "readinessProbe")
        }
        assert probes["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert probes["readinessProbe"]["httpGet"]["path"] == "/readyz"
        named_ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        for name, probe in probes.items():
            assert app_serves_get(service, probe["httpGet"]["path"]), f"{service} {name}: no route"
            assert named_ports[probe["httpGet"]["port"]] == CONTAINER_PORT


@pytest.mark.parametrize("service", SERVICES)
def test_commands_name_modules_that_exist(service: str, rendered: Rendered) -> None:
    """The uvicorn target, the migration module and the Celery app the pods run are importable."""
    for manifest in rendered[(service, "prod")]:
        if manifest.kind not in ("Deployment", "Job"):
            continue
        command = manifest.doc["spec"]["template"]["spec"]["containers"][0]["command"]
        if command[0] == "uvicorn":
            module, attribute = command[1].split(":")
            assert hasattr(importlib.import_module(module), attribute)
            assert command[command.index("--port") + 1] == str(CONTAINER_PORT)
        elif command[:2] == ["python", "-m"]:
            assert importlib.util.find_spec(f"{command[2]}.__main__") is not None
            assert command[3] == "migrate"
        elif command[0] == "celery":
            assert hasattr(importlib.import_module(command[command.index("-A") + 1]), "app")
        else:
            pytest.fail(f"unexpected command {command}")


def test_dockerfile_serves_the_service_it_is_built_for_on_the_same_port(root: Path) -> None:
    text = (root / "Dockerfile").read_text()
    assert f"EXPOSE {CONTAINER_PORT}" in text
    assert "SERVICE_PACKAGE=ecosort_${SERVICE}" in text
    assert re.search(rf"serve --host 0\.0\.0\.0 --port {CONTAINER_PORT}", text)
    assert 'uv sync --frozen --no-dev --no-editable --package "ecosort-${SERVICE}"' in text
    assert "USER 10001:10001" in text
    # Both stages on the same pinned base (the venv's interpreter path must match).
    bases = re.findall(r"^FROM (\S+)", text, flags=re.MULTILINE)
    assert len(bases) == 2 and bases[0] == bases[1]
    assert re.fullmatch(r"python:3\.11-slim-bookworm@sha256:[0-9a-f]{64}", bases[0])
    assert "torch" not in text
    for service in SERVICES:  # what SERVICE selects exists, with the `serve` command
        assert (root / "services" / service / "src" / f"ecosort_{service}").is_dir()
        assert importlib.util.find_spec(f"ecosort_{service}.__main__") is not None
