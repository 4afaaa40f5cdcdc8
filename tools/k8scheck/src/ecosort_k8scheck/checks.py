"""Each check of `make lint-k8s`, returning findings (an empty list passes)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import yaml

from ecosort_k8scheck import cel
from ecosort_k8scheck.charts import lint_chart, render
from ecosort_k8scheck.ingress import check_annotations
from ecosort_k8scheck.paths import ENVIRONMENTS, KUBE_VERSIONS, SERVICES, repo_root
from ecosort_k8scheck.tools import dockerfiles, run_checkov, run_hadolint, skaffold_findings
from ecosort_k8scheck.validate import Finding, load_documents, validate_object


def plain_manifest_files() -> list[Path]:
    """The manifests applied as they are: namespaces, Ingress objects, Gateway API routes."""
    root = repo_root()
    files = [
        *sorted((root / "k8s" / "namespaces").glob("*.yaml")),
        *sorted((root / "ingress").glob("*.yaml")),
        *sorted((root / "ingress" / "gateway-api").glob("*.yaml")),
    ]
    if not files:
        raise RuntimeError("no manifests found under k8s/namespaces and ingress")
    return files


def all_objects() -> list[tuple[str, dict[str, Any]]]:
    """(where, object) for every rendered chart object (dev and prod) and plain manifest."""
    objects = [
        (f"{service}/{env}: {m.source}", m.doc)
        for service in SERVICES
        for env in ENVIRONMENTS
        for m in render(service, env)
    ]
    root = repo_root()
    for path in plain_manifest_files():
        objects += [(str(path.relative_to(root)), doc) for doc in load_documents(path)]
    return objects


def helm_lint() -> list[Finding]:
    return [
        Finding(f"charts/{service} ({env}, k8s {version})", problem)
        for service in SERVICES
        for env in ENVIRONMENTS
        for version in KUBE_VERSIONS
        for problem in lint_chart(service, env, version)
    ]


def schemas(objects: list[tuple[str, dict[str, Any]]]) -> list[Finding]:
    return [
        finding
        for version in KUBE_VERSIONS
        for where, doc in objects
        for finding in validate_object(doc, where, version)
    ]


def cel_rules(objects: list[tuple[str, dict[str, Any]]]) -> cel.CelReport:
    report = cel.CelReport()
    for where, doc in objects:
        if doc.get("kind") in cel.CRD_KINDS:
            cel.check_rules(doc, where, report)
    return report


def annotations_of(objects: list[tuple[str, dict[str, Any]]]) -> list[Finding]:
    return [
        finding
        for where, doc in objects
        if doc.get("kind") == "Ingress"
        for finding in check_annotations(doc, where)
    ]


def hadolint() -> list[Finding]:
    return run_hadolint(dockerfiles())


def skaffold() -> list[Finding]:
    return skaffold_findings()


def checkov(objects: list[tuple[str, dict[str, Any]]]) -> tuple[list[Finding], dict[str, Any]]:
    """checkov over every object (one file per object, named after where it came from) and the
    Dockerfiles, in one run."""
    with tempfile.TemporaryDirectory(prefix="ecosort-checkov-") as tmp:
        directory = Path(tmp)
        for index, (where, doc) in enumerate(objects):
            name = "".join(c if c.isalnum() else "_" for c in where)[-120:]
            (directory / f"{index:04d}_{name}.yaml").write_text(yaml.safe_dump(doc))
        for path in dockerfiles():
            target = directory / "docker" / path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(path.read_text())
        return run_checkov(directory)
