"""Every container the charts run is non-root, read-only, without capabilities, under the
RuntimeDefault seccomp profile, with resources; secrets come only from the existing Secret."""

from __future__ import annotations

from typing import Any

import pytest
from helm_python import HelmError

from ecosort_k8scheck.charts import (
    Rendered,
    assembled_chart,
    load_values,
    of_kind,
    pod_templates,
    render_chart,
)
from ecosort_k8scheck.paths import ENVIRONMENTS, SERVICES

CASES = [(s, e) for s in SERVICES for e in ENVIRONMENTS]


@pytest.mark.parametrize(("service", "env"), CASES)
def test_containers_are_locked_down(service: str, env: str, rendered: Rendered) -> None:
    pods = pod_templates(rendered[(service, env)])
    assert pods
    for workload, pod in pods:
        assert pod["securityContext"]["runAsNonRoot"] is True, workload
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", workload
        assert pod["automountServiceAccountToken"] is False, workload
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["runAsNonRoot"] is True, workload
            assert context["readOnlyRootFilesystem"] is True, workload
            assert context["allowPrivilegeEscalation"] is False, workload
            assert context["capabilities"]["drop"] == ["ALL"], workload
            assert "add" not in context["capabilities"], workload
            assert context["seccompProfile"]["type"] == "RuntimeDefault", workload
            assert container["resources"]["requests"].keys() >= {"cpu", "memory"}, workload
            assert "memory" in container["resources"]["limits"], workload


@pytest.mark.parametrize(("service", "env"), CASES)
def test_secrets_only_by_reference(service: str, env: str, rendered: Rendered) -> None:
    existing = load_values(service, env)["secrets"]["existingSecret"]
    assert of_kind(rendered[(service, env)], "Secret") == []
    for workload, pod in pod_templates(rendered[(service, env)]):
        for container in pod["containers"]:
            names = {e["name"] for e in container["env"]}
            assert {"DATABASE_URL", "REDIS_URL"} <= names, workload
            for variable in container["env"]:
                if "valueFrom" in variable:
                    assert variable["valueFrom"]["secretKeyRef"]["name"] == existing
                else:
                    assert not variable["name"].endswith(("_KEY", "SECRET", "PASSWORD")), variable
    for config_map in of_kind(rendered[(service, env)], "ConfigMap"):
        assert not {"DATABASE_URL", "REDIS_URL"} & config_map["data"].keys()


@pytest.mark.parametrize("service", SERVICES)
def test_a_chart_without_a_secret_name_does_not_render(service: str) -> None:
    values = load_values(service, "prod")
    values["secrets"]["existingSecret"] = ""
    with assembled_chart(service) as path, pytest.raises(HelmError, match="existingSecret"):
        render_chart(
            path, values, release=service, namespace=f"ecosort-{service}", kube_version="1.34"
        )


def test_a_secret_value_in_plain_config_is_refused() -> None:
    values = load_values("recycling", "dev")
    values["config"]["OPENAI_API_KEY"] = "sk-not-here"
    with assembled_chart("recycling") as path, pytest.raises(HelmError, match="OPENAI_API_KEY"):
        render_chart(
            path, values, release="recycling", namespace="ecosort-recycling", kube_version="1.34"
        )


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_dev_login_is_off_in_the_charts(env: str, rendered: Rendered) -> None:
    (config,) = of_kind(rendered[("auth", env)], "ConfigMap")
    assert config["data"]["AUTH_DEV_LOGIN_ENABLED"] == "false"


@pytest.mark.parametrize(("service", "env"), CASES)
def test_migrations_run_as_a_pre_install_and_pre_upgrade_hook(
    service: str, env: str, rendered: Rendered
) -> None:
    (job,) = of_kind(rendered[(service, env)], "Job")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["python", "-m", f"ecosort_{service}", "migrate"]
    # Hooks run before the release's ConfigMap exists: the Job must not depend on it.
    assert "envFrom" not in container
    # ...and before the release's NetworkPolicies: its own egress policy is a hook that runs first.
    (policy,) = [
        p
        for p in of_kind(rendered[(service, env)], "NetworkPolicy")
        if p["metadata"]["name"].endswith("-migrations")
    ]
    assert int(policy["metadata"]["annotations"]["helm.sh/hook-weight"]) < int(
        job["metadata"]["annotations"]["helm.sh/hook-weight"]
    )


def test_waste_pods_can_take_a_workload_identity(render_with: Any) -> None:
    """Prod stores photos in S3 and prefers a workload identity to static keys (values.yaml,
    docs/deploy.md). The egress policy shuts out the node's metadata endpoint and EKS Pod
    Identity's agent (169.254.0.0/16), so IRSA (an annotated ServiceAccount, STS over HTTPS) is
    the way left: the values must be able to annotate the ServiceAccount the pods run as."""
    role = "arn:aws:iam::123456789012:role/ecosort-waste"
    overrides = {"serviceAccount": {"annotations": {"eks.amazonaws.com/role-arn": role}}}
    manifests = render_with("waste", "prod", overrides)
    (account,) = of_kind(manifests, "ServiceAccount")
    assert account["metadata"]["annotations"] == {"eks.amazonaws.com/role-arn": role}
    for workload, pod in pod_templates(manifests):
        if not workload.startswith("Job/"):  # the migration hook runs before the account exists
            assert pod["serviceAccountName"] == account["metadata"]["name"], workload


@pytest.mark.parametrize(("service", "env"), CASES)
def test_service_accounts_carry_no_annotations_by_default(
    service: str, env: str, rendered: Rendered
) -> None:
    (account,) = of_kind(rendered[(service, env)], "ServiceAccount")
    assert "annotations" not in account["metadata"]
