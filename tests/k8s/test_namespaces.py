"""The five namespaces: labels, pod security, quota, limits and a default-deny policy each."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ecosort_k8scheck.paths import SERVICES


@pytest.mark.parametrize("service", SERVICES)
def test_namespace_baseline(service: str, namespace_docs: list[dict[str, Any]]) -> None:
    name = f"ecosort-{service}"
    docs = {
        d["kind"]: d
        for d in namespace_docs
        if d["metadata"].get("namespace", d["metadata"]["name"]) == name
    }
    assert set(docs) == {"Namespace", "ResourceQuota", "LimitRange", "NetworkPolicy"}
    labels = docs["Namespace"]["metadata"]["labels"]
    assert labels["app.kubernetes.io/part-of"] == "ecosort"
    for mode in ("enforce", "audit", "warn"):
        assert labels[f"pod-security.kubernetes.io/{mode}"] == "restricted"
    deny = docs["NetworkPolicy"]["spec"]
    assert deny["podSelector"] == {}
    assert sorted(deny["policyTypes"]) == ["Egress", "Ingress"]
    assert "ingress" not in deny and "egress" not in deny


def test_service_charts_share_one_values_schema(root: Path) -> None:
    """The charts are thin copies over the library: one values contract for all five."""
    schemas = {(root / "charts" / s / "values.schema.json").read_text() for s in SERVICES}
    assert len(schemas) == 1
    templates = {
        s: sorted(p.name for p in (root / "charts" / s / "templates").iterdir()) for s in SERVICES
    }
    assert len({tuple(t) for t in templates.values()}) == 1
