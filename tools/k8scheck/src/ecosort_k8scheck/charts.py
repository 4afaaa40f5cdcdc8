"""Render and lint the service charts offline with the real Helm engine (helm-python-sdk).

A service chart depends on the library chart through `file://../ecosort-lib`. `helm dependency
build` would package it into the chart's charts/ folder; here the same happens in a temporary
copy (helm_python.package), so the working tree is left alone.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import helm_python as helm
import yaml
from helm_python import _native

from ecosort_k8scheck.paths import namespace_of, repo_root

LIBRARY_CHART = "ecosort-lib"


@dataclass(frozen=True)
class Manifest:
    """One rendered Kubernetes object and the template it came from."""

    source: str
    doc: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.doc.get("kind", ""))

    @property
    def name(self) -> str:
        return str(self.doc.get("metadata", {}).get("name", ""))

    @property
    def namespace(self) -> str | None:
        return self.doc.get("metadata", {}).get("namespace")


def chart_dir(service: str) -> Path:
    return repo_root() / "charts" / service


def values_file(service: str, environment: str) -> Path:
    return chart_dir(service) / f"values-{environment}.yaml"


def load_values(service: str, environment: str) -> dict[str, Any]:
    """The values file of an environment, parsed by Helm itself."""
    return helm.values_from_yaml(values_file(service, environment).read_text())


@contextmanager
def assembled_chart(service: str) -> Iterator[Path]:
    """A temporary copy of the service chart with the library chart packaged into charts/."""
    with tempfile.TemporaryDirectory(prefix=f"ecosort-chart-{service}-") as tmp:
        target = Path(tmp) / service
        shutil.copytree(chart_dir(service), target, ignore=shutil.ignore_patterns("charts"))
        (target / "charts").mkdir()
        helm.package(repo_root() / "charts" / LIBRARY_CHART, destination=target / "charts")
        missing = [d for d in helm.dependency_list(target) if d["status"] != "ok"]
        if missing:
            raise RuntimeError(f"{service}: unresolved chart dependencies {missing}")
        yield target


def render_chart(
    path: Path, values: dict[str, Any], *, release: str, namespace: str, kube_version: str
) -> dict[str, str]:
    """Render like `helm template --strict` (missing keys are errors) for an install.

    helm_python.Chart.render does not expose the `strict` and `kube_version` options its C
    library accepts, so the call goes to the same native function with them set.
    """
    options = {
        "name": release,
        "namespace": namespace,
        "is_install": True,
        "strict": True,
        "kube_version": f"v{kube_version}.0",
    }
    with helm.Chart.load(path) as chart:
        rendered = _native.call_string(
            "helm_render", chart._raw(), json.dumps(values), json.dumps(options)
        )
    result: dict[str, str] = json.loads(rendered)
    return result


def split_documents(rendered: dict[str, str]) -> list[Manifest]:
    manifests = []
    for source, text in sorted(rendered.items()):
        for doc in yaml.safe_load_all(text):
            if doc:
                manifests.append(Manifest(source=source, doc=doc))
    return manifests


@cache
def _render_cached(service: str, environment: str, kube_version: str) -> tuple[Manifest, ...]:
    with assembled_chart(service) as path:
        rendered = render_chart(
            path,
            load_values(service, environment),
            release=service,
            namespace=namespace_of(service),
            kube_version=kube_version,
        )
    return tuple(split_documents(rendered))


def render(service: str, environment: str, kube_version: str = "1.34") -> list[Manifest]:
    """The objects `helm upgrade --install <svc> charts/<svc> -n ecosort-<svc> -f values-<env>`
    would create (hooks included)."""
    return list(_render_cached(service, environment, kube_version))


def lint_chart(service: str, environment: str, kube_version: str) -> list[str]:
    """`helm lint --strict` findings (warnings count) for one environment's values."""
    with assembled_chart(service) as path:
        report = helm.lint(
            path,
            load_values(service, environment),
            strict=True,
            namespace=namespace_of(service),
            kube_version=f"v{kube_version}.0",
        )
    problems = [f"{m['path']}: {m['error']}" for m in report["messages"] if m["severity"] >= 2]
    return problems + list(report["errors"])


Rendered = dict[tuple[str, str], list[Manifest]]


def of_kind(manifests: list[Manifest], kind: str) -> list[dict[str, Any]]:
    return [m.doc for m in manifests if m.kind == kind]


def pod_templates(manifests: list[Manifest]) -> list[tuple[str, dict[str, Any]]]:
    """(kind/name, pod spec) of every Deployment and Job."""
    return [
        (f"{m.kind}/{m.name}", m.doc["spec"]["template"]["spec"])
        for m in manifests
        if m.kind in ("Deployment", "Job")
    ]
