"""The API pods: who may set the client address uvicorn reports, how they stop, and room in /tmp
for what they spool."""

from __future__ import annotations

import asyncio
import ipaddress
from typing import Any

import pytest
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from ecosort_k8scheck.charts import Rendered, of_kind
from ecosort_k8scheck.paths import ENVIRONMENTS, SERVICES
from ecosort_waste.api.body_limit import MAX_BODY_BYTES

CASES = [(service, env) for service in SERVICES for env in ENVIRONMENTS]


def api_container(rendered: Rendered, service: str, env: str) -> tuple[dict, dict[str, Any]]:
    (api,) = [
        d
        for d in of_kind(rendered[(service, env)], "Deployment")
        if d["metadata"]["name"] == service
    ]
    pod = api["spec"]["template"]["spec"]
    return pod, pod["containers"][0]


def option(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def client_seen(trusted: str, peer: str, forwarded_for: str) -> str:
    """The client address uvicorn's proxy-headers middleware hands the app (what auth's per-IP
    rate limits key on) for a connection from `peer`."""
    seen: dict[str, str] = {}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen["client"] = scope["client"][0]

    scope = {
        "type": "http",
        "client": (peer, 40000),
        "headers": [(b"x-forwarded-for", forwarded_for.encode())],
    }
    asyncio.run(ProxyHeadersMiddleware(app, trusted_hosts=trusted)(scope, None, None))
    return seen["client"]


@pytest.mark.parametrize(("service", "env"), CASES)
def test_a_client_cannot_choose_its_own_address(service: str, env: str, rendered: Rendered) -> None:
    """The controller appends the address it saw to X-Forwarded-For; whatever the client wrote
    before it must not become the client address (with "*" uvicorn took the leftmost entry)."""
    _, container = api_container(rendered, service, env)
    command = container["command"]
    assert "--proxy-headers" in command
    trusted = option(command, "--forwarded-allow-ips")
    assert "*" not in trusted.split(","), "every client could write its own address"
    networks = [ipaddress.ip_network(entry) for entry in trusted.split(",")]
    # The environments name the controller's pod range: trusting only loopback would make every
    # client the controller, one rate-limit bucket for all.
    assert not any(network.is_loopback for network in networks)
    controller = str(next(networks[0].hosts()))
    assert client_seen(trusted, controller, "198.51.100.66, 203.0.113.7") == "203.0.113.7"
    # Nobody else is trusted to set it.
    assert client_seen(trusted, "203.0.113.9", "198.51.100.66") == "203.0.113.9"


@pytest.mark.parametrize(("service", "env"), CASES)
def test_api_pods_drain_before_they_stop(service: str, env: str, rendered: Rendered) -> None:
    """Endpoint removal reaches the ingress controllers only after the kubelet has sent SIGTERM:
    the preStop pause keeps the pod serving meanwhile, and the grace period covers the pause,
    uvicorn's graceful shutdown and a margin for the app's own shutdown."""
    pod, container = api_container(rendered, service, env)
    pause = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pause >= 3
    drain = int(option(container["command"], "--timeout-graceful-shutdown"))
    assert pod["terminationGracePeriodSeconds"] >= pause + drain + 5


@pytest.mark.parametrize(("service", "env"), CASES)
def test_api_pods_log_each_request_once(service: str, env: str, rendered: Rendered) -> None:
    """The service's own JSON line (with the request id) is the access log; uvicorn's would be
    a second, plain-text line per request, health probes included."""
    _, container = api_container(rendered, service, env)
    assert "--no-access-log" in container["command"]


def mebibytes(quantity: str) -> float:
    units = {"Mi": 1, "Gi": 1024}
    return float(quantity[:-2]) * units[quantity[-2:]]


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_waste_api_tmp_holds_a_burst_of_spooled_uploads(env: str, rendered: Rendered) -> None:
    """Starlette spools each multipart part over 1 MB to /tmp until the request ends: the
    emptyDir must hold the uploads a pod takes at once (sized for 64 maximal ones), or they fail
    or the pod is evicted."""
    pod, _ = api_container(rendered, "waste", env)
    (tmp,) = [v for v in pod["volumes"] if v["name"] == "tmp"]
    assert mebibytes(tmp["emptyDir"]["sizeLimit"]) * 2**20 >= 64 * MAX_BODY_BYTES
