"""Every Ingress path and HTTPRoute reaches a Service, a port and pods that exist."""

from __future__ import annotations

from typing import Any

import pytest

from ecosort_common.ingress_errors import INGRESS_ERROR_CODES
from ecosort_k8scheck.charts import Rendered, of_kind
from ecosort_k8scheck.netpol import selector_matches
from ecosort_k8scheck.paths import SERVICES


def service_named(rendered: Rendered, namespace: str, env: str, name: str) -> dict[str, Any]:
    service = namespace.removeprefix("ecosort-")
    matches = [
        s for s in of_kind(rendered[(service, env)], "Service") if s["metadata"]["name"] == name
    ]
    assert matches, f"no Service {name} in {namespace} ({env})"
    assert matches[0]["metadata"]["namespace"] == namespace
    return matches[0]


def assert_port_reaches_pods(
    rendered: Rendered, env: str, svc: dict[str, Any], port: dict[str, Any]
) -> None:
    """The Service port's targetPort is a named container port of pods the selector selects."""
    namespace = svc["metadata"]["namespace"]
    deployments = of_kind(rendered[(namespace.removeprefix("ecosort-"), env)], "Deployment")
    selected = [
        d
        for d in deployments
        if selector_matches(
            {"matchLabels": svc["spec"]["selector"]}, d["spec"]["template"]["metadata"]["labels"]
        )
    ]
    assert len(selected) == 1, (
        f"Service {svc['metadata']['name']} selects {len(selected)} Deployments"
    )
    ports = {
        p["name"]
        for c in selected[0]["spec"]["template"]["spec"]["containers"]
        for p in c.get("ports", [])
    }
    assert port["targetPort"] in ports


def test_one_ingress_per_service_on_one_host(ingresses: list[dict[str, Any]]) -> None:
    assert sorted(i["metadata"]["namespace"] for i in ingresses) == sorted(
        f"ecosort-{s}" for s in SERVICES
    )
    hosts = {rule["host"] for i in ingresses for rule in i["spec"]["rules"]}
    assert len(hosts) == 1
    assert {i["spec"]["ingressClassName"] for i in ingresses} == {"nginx"}


@pytest.mark.parametrize("env", ["dev", "prod"])
def test_every_ingress_path_reaches_a_service_port(
    env: str, rendered: Rendered, ingresses: list[dict[str, Any]]
) -> None:
    for ingress in ingresses:
        namespace = ingress["metadata"]["namespace"]
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                assert path["path"] == f"/api/v1/{namespace.removeprefix('ecosort-')}"
                backend = path["backend"]["service"]
                svc = service_named(rendered, namespace, env, backend["name"])
                ports = [
                    p for p in svc["spec"]["ports"] if p.get("name") == backend["port"]["name"]
                ]
                assert ports, f"{namespace}: Service has no port named {backend['port']['name']}"
                assert_port_reaches_pods(rendered, env, svc, ports[0])


def test_the_controllers_own_errors_are_pages_its_service_answers(
    ingresses: list[dict[str, Any]],
) -> None:
    """ecosort_common.ingress_errors answers these codes at the Service's `/`; nginx must send
    no others there, and must not put them over the services' own answers."""
    prefix = "nginx.ingress.kubernetes.io/"
    for ingress in ingresses:
        annotations = ingress["metadata"]["annotations"]
        codes = annotations[prefix + "custom-http-errors"].split(",")
        assert tuple(int(code) for code in codes) == INGRESS_ERROR_CODES
        backends = {
            path["backend"]["service"]["name"]
            for rule in ingress["spec"]["rules"]
            for path in rule["http"]["paths"]
        }
        assert backends == {annotations[prefix + "default-backend"]}
        assert annotations[prefix + "disable-proxy-intercept-errors"] == "true"


def test_http_routes_mirror_the_ingresses(
    rendered: Rendered,
    ingresses: list[dict[str, Any]],
    gateway_api_docs: list[dict[str, Any]],
    namespace_docs: list[dict[str, Any]],
) -> None:
    (gateway,) = [d for d in gateway_api_docs if d["kind"] == "Gateway"]
    routes = [d for d in gateway_api_docs if d["kind"] == "HTTPRoute"]
    listeners = {listener["name"]: listener for listener in gateway["spec"]["listeners"]}
    namespace_labels = {
        n["metadata"]["name"]: n["metadata"]["labels"]
        for n in namespace_docs
        if n["kind"] == "Namespace"
    }
    ingress_routes = {
        (i["metadata"]["namespace"], r["host"], p["path"], p["backend"]["service"]["name"])
        for i in ingresses
        for r in i["spec"]["rules"]
        for p in r["http"]["paths"]
    }
    http_routes = set()
    for route in routes:
        namespace = route["metadata"]["namespace"]
        for parent in route["spec"]["parentRefs"]:
            assert (parent["name"], parent["namespace"]) == (
                gateway["metadata"]["name"],
                gateway["metadata"]["namespace"],
            )
            listener = listeners[parent["sectionName"]]
            allowed = listener["allowedRoutes"]["namespaces"]
            assert selector_matches(allowed["selector"], namespace_labels[namespace])
        for rule in route["spec"]["rules"]:
            for backend in rule["backendRefs"]:
                for env in ("dev", "prod"):
                    svc = service_named(rendered, namespace, env, backend["name"])
                    (port,) = [p for p in svc["spec"]["ports"] if p["port"] == backend["port"]]
                    assert_port_reaches_pods(rendered, env, svc, port)
                for match in rule["matches"]:
                    if match["path"]["type"] == "RegularExpression":
                        # A rule of its own for a timeout (waste's event stream), inside a
                        # prefix of the same Service (test_waste_event_stream.py).
                        continue
                    for host in route["spec"]["hostnames"]:
                        http_routes.add((namespace, host, match["path"]["value"], backend["name"]))
    assert http_routes == ingress_routes
