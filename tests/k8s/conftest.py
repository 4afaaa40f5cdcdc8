"""Fixtures of the Kubernetes tests: the charts rendered with the real Helm engine (dev and prod
values), and the plain manifests (namespaces, Ingress objects, Gateway API routes)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from ecosort_k8scheck.charts import (
    Manifest,
    Rendered,
    assembled_chart,
    load_values,
    render,
    render_chart,
    split_documents,
)
from ecosort_k8scheck.paths import ENVIRONMENTS, SERVICES, namespace_of, repo_root


@pytest.fixture(scope="session")
def rendered() -> Rendered:
    return {(svc, env): render(svc, env) for svc in SERVICES for env in ENVIRONMENTS}


def merged(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    result = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merged(result[key], value)
        else:
            result[key] = value
    return result


def _render_with(service: str, env: str, overrides: dict[str, Any]) -> list[Manifest]:
    """The chart rendered with an environment's values plus `overrides` (merged like --set), for
    what a values file could get wrong; raises helm_python's errors where Helm refuses."""
    values = merged(load_values(service, env), overrides)
    with assembled_chart(service) as path:
        rendered = render_chart(
            path, values, release=service, namespace=namespace_of(service), kube_version="1.34"
        )
    return split_documents(rendered)


RenderWith = Callable[[str, str, dict[str, Any]], list[Manifest]]


@pytest.fixture(scope="session")
def render_with() -> RenderWith:
    return _render_with


@pytest.fixture(scope="session")
def root() -> Path:
    return repo_root()


def load_all(paths: list[Path]) -> list[dict[str, Any]]:
    return [doc for path in paths for doc in yaml.safe_load_all(path.read_text()) if doc]


@pytest.fixture(scope="session")
def namespace_docs(root: Path) -> list[dict[str, Any]]:
    return load_all(sorted((root / "k8s" / "namespaces").glob("*.yaml")))


@pytest.fixture(scope="session")
def ingresses(root: Path) -> list[dict[str, Any]]:
    return [
        d for d in load_all(sorted((root / "ingress").glob("*.yaml"))) if d["kind"] == "Ingress"
    ]


@pytest.fixture(scope="session")
def gateway_api_docs(root: Path) -> list[dict[str, Any]]:
    return load_all(sorted((root / "ingress" / "gateway-api").glob("*.yaml")))


@pytest.fixture(scope="session")
def skaffold(root: Path) -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load((root / "skaffold.yaml").read_text())
    return config
