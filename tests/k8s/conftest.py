"""Fixtures of the Kubernetes tests: the charts rendered with the real Helm engine (dev and prod
values), and the plain manifests (namespaces, Ingress objects, Gateway API routes)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from ecosort_k8scheck.charts import Rendered, render
from ecosort_k8scheck.paths import ENVIRONMENTS, SERVICES, repo_root


@pytest.fixture(scope="session")
def rendered() -> Rendered:
    return {(svc, env): render(svc, env) for svc in SERVICES for env in ENVIRONMENTS}


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
