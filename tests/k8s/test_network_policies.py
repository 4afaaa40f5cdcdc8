"""The NetworkPolicies (namespace default-deny + chart rules) allow exactly the flows the design
needs: ingress controller -> APIs, waste (API and worker) -> recycling, everyone -> auth (JWKS),
services -> PostgreSQL/Redis and DNS, third-party HTTPS where a provider is used; nothing else."""

from __future__ import annotations

from typing import Any

import pytest

from ecosort_k8scheck.charts import Rendered, of_kind
from ecosort_k8scheck.netpol import Endpoint, allowed
from ecosort_k8scheck.paths import SERVICES

API_PORT = 8000
CONTROLLER = Endpoint("ingress-nginx", {"app.kubernetes.io/name": "ingress-nginx"})
DNS = Endpoint("kube-system", {"k8s-app": "kube-dns"})
POSTGRES = Endpoint("ecosort-data", {"app.kubernetes.io/name": "postgresql"})
REDIS = Endpoint("ecosort-data", {"app.kubernetes.io/name": "redis"})
STRANGER = Endpoint("default", {"app": "curl"})
INTERNET = Endpoint(ip="203.0.113.10")
METADATA = Endpoint(ip="169.254.169.254")
THIRD_PARTY_USERS = {"auth", "waste", "recycling", "locations"}


def pod(service: str, component: str = "api") -> Endpoint:
    return Endpoint(
        f"ecosort-{service}",
        {
            "app.kubernetes.io/name": service,
            "app.kubernetes.io/instance": service,
            "app.kubernetes.io/component": component,
        },
    )


@pytest.fixture(scope="module", params=["dev", "prod"])
def world(
    request: pytest.FixtureRequest, rendered: Rendered, namespace_docs: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], dict[str, dict[str, str]]]:
    policies = [d for d in namespace_docs if d["kind"] == "NetworkPolicy"]
    for service in SERVICES:
        policies += of_kind(rendered[(service, request.param)], "NetworkPolicy")
    labels = {
        d["metadata"]["name"]: dict(d["metadata"]["labels"])
        for d in namespace_docs
        if d["kind"] == "Namespace"
    }
    for extra in ("ingress-nginx", "kube-system", "ecosort-data", "default"):
        labels[extra] = {}
    for name, namespace_labels in labels.items():
        namespace_labels["kubernetes.io/metadata.name"] = name  # set by the API server
    return policies, labels


def can(
    world: Any, source: Endpoint, destination: Endpoint, port: int, protocol: str = "TCP"
) -> bool:
    policies, labels = world
    return allowed(source, destination, port, policies, labels, protocol)


def test_the_evaluator_sees_the_default_deny(world: Any) -> None:
    _, labels = world
    # Without any policy, everything is open; with them, a stranger is shut out.
    assert allowed(STRANGER, pod("users"), API_PORT, [], labels)
    assert not can(world, STRANGER, pod("users"), API_PORT)


@pytest.mark.parametrize("service", SERVICES)
def test_ingress_controller_reaches_each_api_and_nothing_else(world: Any, service: str) -> None:
    assert can(world, CONTROLLER, pod(service), API_PORT)
    assert not can(world, CONTROLLER, pod(service), 9090)
    assert not can(world, STRANGER, pod(service), API_PORT)


def test_only_waste_reaches_recycling(world: Any) -> None:
    assert can(world, pod("waste"), pod("recycling"), API_PORT)
    assert can(world, pod("waste", "worker"), pod("recycling"), API_PORT)
    for other in ("users", "locations", "auth"):
        assert not can(world, pod(other), pod("recycling"), API_PORT)


@pytest.mark.parametrize("service", [s for s in SERVICES if s != "auth"])
def test_everyone_reaches_auth_for_the_jwks(world: Any, service: str) -> None:
    assert can(world, pod(service), pod("auth"), API_PORT)


def test_no_other_service_to_service_traffic(world: Any) -> None:
    allowed_pairs = {("waste", "recycling")} | {(s, "auth") for s in SERVICES}
    for source in SERVICES:
        for target in SERVICES:
            if source != target and (source, target) not in allowed_pairs:
                assert not can(world, pod(source), pod(target), API_PORT), f"{source} -> {target}"
    assert not can(world, pod("recycling"), pod("waste", "worker"), API_PORT)


@pytest.mark.parametrize("service", SERVICES)
def test_dns_and_data_stores(world: Any, service: str) -> None:
    policies, _ = world
    components = ["api", "migrations"] + (["worker"] if service == "waste" else [])
    in_cluster_stores = any(
        "ipBlock" not in peer
        for p in policies
        if p["metadata"]["name"] == f"{service}-egress"
        for rule in p["spec"]["egress"]
        for peer in rule["to"]
        if rule["ports"][0]["port"] == 5432
    )
    for component in components:
        source = pod(service, component)
        assert can(world, source, DNS, 53, "UDP")
        assert can(world, source, DNS, 53, "TCP")
        if in_cluster_stores:
            assert can(world, source, POSTGRES, 5432)
            assert not can(world, source, POSTGRES, 6379)
            if component != "migrations":
                assert can(world, source, REDIS, 6379)
        else:  # prod: managed PostgreSQL/Redis on private subnets
            assert can(world, source, Endpoint(ip="10.20.0.5"), 5432)
            assert not can(world, source, Endpoint(ip="10.20.0.5"), 6379)
            if component != "migrations":
                assert can(world, source, Endpoint(ip="10.20.1.7"), 6379)


@pytest.mark.parametrize("service", SERVICES)
def test_third_party_https_only_where_a_provider_is_used(world: Any, service: str) -> None:
    assert can(world, pod(service), INTERNET, 443) == (service in THIRD_PARTY_USERS)
    assert not can(world, pod(service), INTERNET, 80)
    assert not can(world, pod(service), METADATA, 443)
    assert not can(world, pod(service), Endpoint(ip="10.1.2.3"), 443)


@pytest.mark.parametrize("service", SERVICES)
def test_migration_job_gets_dns_and_postgres_only(world: Any, service: str) -> None:
    """The hook Job runs code at every upgrade before anything else: it gets the migrations
    policy (DNS + PostgreSQL), not the long-running pods' Redis, API and HTTPS egress."""
    job = pod(service, "migrations")
    for redis in (REDIS, Endpoint(ip="10.20.1.7")):
        assert not can(world, job, redis, 6379)
    assert not can(world, job, INTERNET, 443)
    for other in SERVICES:
        if other != service:
            assert not can(world, job, pod(other), API_PORT)
    # The long-running pods keep theirs.
    assert can(world, pod(service), pod("auth"), API_PORT) == (service != "auth")
    if service == "waste":
        assert can(world, pod("waste", "worker"), pod("recycling"), API_PORT)
