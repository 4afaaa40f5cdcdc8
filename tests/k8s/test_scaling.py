"""HPAs and the KEDA ScaledObject target the right Deployments; quotas leave room for the maxima."""

from __future__ import annotations

from typing import Any

import pytest

from ecosort_k8scheck.charts import Manifest, Rendered, load_values, of_kind
from ecosort_k8scheck.paths import ENVIRONMENTS, SERVICES

AUTOSCALED = {"waste", "recycling"}


@pytest.mark.parametrize("env", ENVIRONMENTS)
@pytest.mark.parametrize("service", SERVICES)
def test_hpa_on_cpu_and_memory_targets_the_api(service: str, env: str, rendered: Rendered) -> None:
    hpas = of_kind(rendered[(service, env)], "HorizontalPodAutoscaler")
    if service not in AUTOSCALED:
        assert hpas == []
        return
    (hpa,) = hpas
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    (deployment,) = [
        d
        for d in of_kind(rendered[(service, env)], "Deployment")
        if d["metadata"]["name"] == target["name"]
    ]
    assert target["kind"] == "Deployment" and target["apiVersion"] == "apps/v1"
    assert (
        deployment["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"] == "api"
    )
    # The HPA owns the replica count: a replicas field would fight it on every upgrade.
    assert "replicas" not in deployment["spec"]
    resources = {
        m["resource"]["name"]: m["resource"]["target"]["type"] for m in hpa["spec"]["metrics"]
    }
    assert resources == {"cpu": "Utilization", "memory": "Utilization"}


def scaled_deployment(manifests: list[Manifest], scaled: dict[str, Any]) -> dict[str, Any]:
    """The Deployment a KEDA ScaledObject scales (exactly one)."""
    target = scaled["spec"]["scaleTargetRef"]["name"]
    (deployment,) = [d for d in of_kind(manifests, "Deployment") if d["metadata"]["name"] == target]
    return deployment


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_scaled_object_watches_the_queue_the_worker_consumes(env: str, rendered: Rendered) -> None:
    manifests = rendered[("waste", env)]
    (scaled,) = of_kind(manifests, "ScaledObject")
    (auth,) = of_kind(manifests, "TriggerAuthentication")
    worker = scaled_deployment(manifests, scaled)
    assert "replicas" not in worker["spec"]  # KEDA owns it
    command = worker["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[:4] == ["celery", "-A", "ecosort_waste.worker", "worker"]
    queue = command[command.index("-Q") + 1]
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "redis"
    (config,) = of_kind(manifests, "ConfigMap")
    # Celery's Redis transport names the list after the queue, behind CELERY_KEY_PREFIX if set.
    assert (
        trigger["metadata"]["listName"]
        == config["data"].get("CELERY_KEY_PREFIX", "") + queue
        == "analyses"
    )
    assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
    (secret_ref,) = auth["spec"]["secretTargetRef"]
    assert secret_ref["parameter"] == "password"
    assert secret_ref["name"] == load_values("waste", env)["secrets"]["existingSecret"]
    # No probe through the broker (celery inspect ping hangs under load): a heartbeat file.
    probes = [
        worker["spec"]["template"]["spec"]["containers"][0][p]
        for p in ("livenessProbe", "startupProbe")
    ]
    for probe in probes:
        assert "inspect" not in " ".join(probe["exec"]["command"])
        assert "WORKER_HEARTBEAT_FILE" in probe["exec"]["command"][-1]
    env_names = {
        e["name"]: e.get("value")
        for e in worker["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env_names["WORKER_HEARTBEAT_FILE"].startswith("/tmp/")  # the only writable path


def quantity(value: str | int) -> float:
    """CPU cores or memory bytes of a Kubernetes quantity (the forms the charts use)."""
    text = str(value)
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    for suffix, factor in units.items():
        if text.endswith(suffix):
            return float(text.removesuffix(suffix)) * factor
    return float(text)


@pytest.mark.parametrize("service", SERVICES)
def test_quota_fits_the_scaling_maxima(
    service: str, rendered: Rendered, namespace_docs: list[dict]
) -> None:
    (quota,) = [
        d
        for d in namespace_docs
        if d["kind"] == "ResourceQuota" and d["metadata"]["namespace"] == f"ecosort-{service}"
    ]
    manifests = rendered[(service, "prod")]
    hpa = {
        h["spec"]["scaleTargetRef"]["name"]: h["spec"]["maxReplicas"]
        for h in of_kind(manifests, "HorizontalPodAutoscaler")
    }
    keda = {
        s["spec"]["scaleTargetRef"]["name"]: s["spec"]["maxReplicaCount"]
        for s in of_kind(manifests, "ScaledObject")
    }
    need = {"requests.cpu": 0.0, "requests.memory": 0.0, "limits.memory": 0.0, "pods": 0.0}
    for kind in ("Deployment", "Job"):
        for workload in of_kind(manifests, kind):
            name = workload["metadata"]["name"]
            # Maximum replicas, plus one surge pod during a rolling update.
            count = (
                1
                if kind == "Job"
                else hpa.get(name, keda.get(name, workload["spec"].get("replicas", 1))) + 1
            )
            for container in workload["spec"]["template"]["spec"]["containers"]:
                resources = container["resources"]
                need["requests.cpu"] += count * quantity(resources["requests"]["cpu"])
                need["requests.memory"] += count * quantity(resources["requests"]["memory"])
                need["limits.memory"] += count * quantity(resources["limits"]["memory"])
            need["pods"] += count
    for key, value in need.items():
        assert value <= quantity(quota["spec"]["hard"][key]), f"{service}: {key} needs {value}"


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_waste_worker_prefers_nodes_with_int8_dot_products(env: str, rendered: Rendered) -> None:
    """A preference, never a requirement: without Node Feature Discovery's labels it matches no
    node, and the worker still schedules anywhere."""
    manifests = rendered[("waste", env)]
    (scaled,) = of_kind(manifests, "ScaledObject")
    worker = scaled_deployment(manifests, scaled)
    node_affinity = worker["spec"]["template"]["spec"]["affinity"]["nodeAffinity"]
    assert set(node_affinity) == {"preferredDuringSchedulingIgnoredDuringExecution"}
    preferred = {
        expression["key"]: term["weight"]
        for term in node_affinity["preferredDuringSchedulingIgnoredDuringExecution"]
        for expression in term["preference"]["matchExpressions"]
    }
    assert preferred == {
        "feature.node.kubernetes.io/cpu-cpuid.AVX512VNNI": 100,
        "feature.node.kubernetes.io/cpu-cpuid.AVXVNNI": 50,
    }
