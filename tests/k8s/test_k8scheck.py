"""The offline checks of `make lint-k8s` catch what they are there to catch."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from ecosort_k8scheck import cel, paths
from ecosort_k8scheck.charts import Rendered, of_kind
from ecosort_k8scheck.ingress import annotation_risks, check_annotations
from ecosort_k8scheck.tools import run_hadolint, skaffold_findings
from ecosort_k8scheck.validate import validate_object


def test_schemas_are_found_beside_the_repository_or_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("ECOSORT_SCHEMAS_DIR", raising=False)
    assert paths.schemas_dir() == (paths.repo_root().parent / "shared" / "schemas").resolve()
    monkeypatch.setenv("ECOSORT_SCHEMAS_DIR", str(tmp_path))
    assert paths.schemas_dir() == tmp_path.resolve()
    monkeypatch.setenv("ECOSORT_SCHEMAS_DIR", str(tmp_path / "missing"))
    with pytest.raises(RuntimeError, match="ECOSORT_SCHEMAS_DIR"):
        paths.schemas_dir()


def deployment(rendered: Rendered) -> dict[str, Any]:
    return copy.deepcopy(of_kind(rendered[("users", "dev")], "Deployment")[0])


@pytest.mark.parametrize("version", paths.KUBE_VERSIONS)
def test_kubernetes_validate_is_strict(rendered: Rendered, version: str) -> None:
    good = deployment(rendered)
    assert validate_object(good, "d", version) == []
    bad = deployment(rendered)
    bad["spec"]["template"]["spec"]["containers"][0]["livenessProbes"] = {}
    assert validate_object(bad, "d", version)
    wrong_type = deployment(rendered)
    wrong_type["spec"]["replicas"] = "two"
    assert validate_object(wrong_type, "d", version)


def test_an_unknown_kind_fails() -> None:
    doc = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}
    assert validate_object(doc, "w", "1.34")


def scaled_object(rendered: Rendered) -> dict[str, Any]:
    return copy.deepcopy(of_kind(rendered[("waste", "prod")], "ScaledObject")[0])


def test_keda_objects_are_checked_against_the_crd(rendered: Rendered) -> None:
    good = scaled_object(rendered)
    assert validate_object(good, "so", "1.34") == []
    typo = scaled_object(rendered)
    typo["spec"]["maxReplicas"] = 3  # KEDA calls it maxReplicaCount
    assert validate_object(typo, "so", "1.34")
    no_target = scaled_object(rendered)
    del no_target["spec"]["scaleTargetRef"]
    assert validate_object(no_target, "so", "1.34")
    auth = copy.deepcopy(of_kind(rendered[("waste", "prod")], "TriggerAuthentication")[0])
    assert validate_object(auth, "ta", "1.34") == []
    auth["spec"]["secretTargetRef"][0].pop("key")
    assert validate_object(auth, "ta", "1.34")


def test_crd_cel_rules_are_evaluated(rendered: Rendered) -> None:
    report = cel.CelReport()
    cel.check_rules(scaled_object(rendered), "so", report)
    assert report.evaluated >= 1 and report.findings == []
    inverted = scaled_object(rendered)
    inverted["spec"]["minReplicaCount"] = inverted["spec"]["maxReplicaCount"] + 1
    report = cel.CelReport()
    cel.check_rules(inverted, "so", report)
    assert [f.message for f in report.findings] == [
        "ScaledObject .spec: minReplicaCount must be less than or equal to maxReplicaCount"
    ]


def test_risky_ingress_annotations_are_refused() -> None:
    risks = annotation_risks()
    assert risks["configuration-snippet"] == "Critical"
    assert risks["auth-url"] == "High"
    assert risks["proxy-body-size"] == "Medium"
    doc = {
        "metadata": {
            "annotations": {
                "nginx.ingress.kubernetes.io/limit-rps": "5",
                "nginx.ingress.kubernetes.io/configuration-snippet": "more_set_headers x;",
                "nginx.ingress.kubernetes.io/auth-url": "http://x",
                "nginx.ingress.kubernetes.io/made-up": "1",
            }
        }
    }
    messages = sorted(f.message for f in check_annotations(doc, "i"))
    assert len(messages) == 3
    assert "rated Critical" in " ".join(messages) and "rated High" in " ".join(messages)
    assert "not in the risk table" in " ".join(messages)


def test_hadolint_flags_a_careless_dockerfile(tmp_path: Path) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM python\nRUN pip install uv\nCMD uvicorn app:app\n")
    codes = {f.message.split()[0] for f in run_hadolint([dockerfile])}
    assert {"DL3006", "DL3013", "DL3042"} <= codes


def test_skaffold_schema_flags_a_bad_config(tmp_path: Path, root: Path) -> None:
    assert skaffold_findings(root / "skaffold.yaml") == []
    bad = tmp_path / "skaffold.yaml"
    bad.write_text((root / "skaffold.yaml").read_text().replace("chartPath:", "chartPth:", 1))
    assert skaffold_findings(bad)
