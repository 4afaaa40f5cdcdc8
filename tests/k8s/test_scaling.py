"""HPAs and the KEDA ScaledObject target the right Deployments; quotas leave room for the maxima."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
from celery import signals

from ecosort_k8scheck.charts import Manifest, Rendered, chart_dir, load_values, of_kind
from ecosort_k8scheck.paths import ENVIRONMENTS, SERVICES
from ecosort_waste import worker
from ecosort_waste.config import Settings

# The service's own default, which the chart assumes where config does not set it.
DEFAULT_DEADLINE: int = Settings.model_fields["analysis_deadline_seconds"].default

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
    # --quiet: no start-up banner, so the worker's log is JSON lines only.
    assert command[:5] == ["celery", "-A", "ecosort_waste.worker", "--quiet", "worker"]
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


def test_a_restarted_worker_does_not_start_on_the_previous_heartbeat(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """/tmp is an emptyDir: it outlives a container restart, and so does the last heartbeat. The
    worker removes it at start, so the startup probe waits for this container's consumer."""
    heartbeat = tmp_path / "worker-heartbeat"
    heartbeat.touch()
    monkeypatch.setattr(
        worker, "get_settings", lambda: Settings(worker_heartbeat_file=str(heartbeat))
    )
    signals.worker_init.send(sender=None)
    assert not heartbeat.exists()
    signals.worker_init.send(sender=None)  # none there: no error


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


def test_scaled_object_list_follows_the_celery_key_prefix(render_with: Any) -> None:
    """kombu names the queue's list CELERY_KEY_PREFIX + queue: KEDA must watch that list, or it
    sees an empty queue forever while the workers' backlog grows."""
    manifests = render_with("waste", "prod", {"config": {"CELERY_KEY_PREFIX": "ecosort:"}})
    (scaled,) = of_kind(manifests, "ScaledObject")
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["metadata"]["listName"] == "ecosort:analyses"


def test_scaled_object_refuses_a_queue_the_worker_does_not_consume(render_with: Any) -> None:
    overrides = {"workers": {"worker": {"keda": {"redis": {"queue": "other"}}}}}
    with pytest.raises(helm.HelmError, match="consumes -Q"):
        render_with("waste", "prod", overrides)


@pytest.mark.parametrize(
    "queue_arguments", [["-Q", "analyses"], ["--queues=analyses"], ["-Qanalyses"]]
)
def test_every_spelling_of_the_workers_queue_is_understood(
    queue_arguments: list[str], render_with: Any
) -> None:
    command = ["celery", "-A", "ecosort_waste.worker", "worker", *queue_arguments]
    manifests = render_with("waste", "prod", {"workers": {"worker": {"command": command}}})
    (scaled,) = of_kind(manifests, "ScaledObject")
    assert scaled["spec"]["triggers"][0]["metadata"]["listName"] == "analyses"


def test_without_network_policies_the_redis_address_is_not_judged_by_them(
    render_with: Any,
) -> None:
    address = "redis-master.ecosort-data.svc.cluster.local:6379"
    overrides = {
        "networkPolicy": {"enabled": False},
        "workers": {"worker": {"keda": {"redis": {"address": address}}}},
    }
    (scaled,) = of_kind(render_with("waste", "prod", overrides), "ScaledObject")
    assert scaled["spec"]["triggers"][0]["metadata"]["address"] == address


def test_keda_polls_the_managed_redis_in_prod(rendered: Rendered, render_with: Any) -> None:
    """Prod's Redis is outside the cluster (an ipBlock egress): the dev Service name would have
    KEDA poll a Redis nobody uses, and scale on a queue that is always empty."""
    (scaled,) = of_kind(rendered[("waste", "prod")], "ScaledObject")
    (trigger,) = scaled["spec"]["triggers"]
    assert ".svc" not in trigger["metadata"]["address"]
    dev_default = "redis-master.ecosort-data.svc.cluster.local:6379"
    overrides = {"workers": {"worker": {"keda": {"redis": {"address": dev_default}}}}}
    with pytest.raises(helm.HelmError, match="in-cluster Service"):
        render_with("waste", "prod", overrides)


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_scaled_object_falls_back_and_scales_down_through_the_hpa(
    env: str, rendered: Rendered
) -> None:
    (scaled,) = of_kind(rendered[("waste", env)], "ScaledObject")
    spec = scaled["spec"]
    # KEDA validates a fallback only on AverageValue triggers.
    fallback = spec["fallback"]
    assert spec["minReplicaCount"] <= fallback["replicas"] <= spec["maxReplicaCount"]
    assert all(t["metricType"] == "AverageValue" for t in spec["triggers"])
    # cooldownPeriod only delays the step to zero: with a minimum above zero it would do nothing
    # (and suggest a scale-down delay there is not). The HPA's behavior holds that delay.
    if spec["minReplicaCount"] > 0:
        assert "cooldownPeriod" not in spec
    behavior = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] >= 60


@pytest.mark.parametrize("env", ENVIRONMENTS)
@pytest.mark.parametrize("service", SERVICES)
def test_replica_counts_in_values_are_the_ones_that_run(service: str, env: str) -> None:
    """With the HPA on, the Deployment has no replicas field: a count set there is ignored, and
    the floor belongs in autoscaling.minReplicas."""
    values = load_values(service, env)
    defaults = helm.values_from_yaml((chart_dir(service) / "values.yaml").read_text())
    if values.get("autoscaling", {}).get("enabled", defaults["autoscaling"]["enabled"]):
        assert "replicas" not in values.get("api", {}), f"{service}/{env}: api.replicas"


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_worker_grace_outlasts_its_longest_task(env: str, rendered: Rendered) -> None:
    """Celery's warm shutdown lets the running task finish, and its time limit (twice
    ANALYSIS_DEADLINE_SECONDS, queue.py) ends a hung one: the grace period must outlast that, so
    that Celery, not a SIGKILL, ends every task."""
    manifests = rendered[("waste", env)]
    (scaled,) = of_kind(manifests, "ScaledObject")
    worker = scaled_deployment(manifests, scaled)
    (config,) = of_kind(manifests, "ConfigMap")
    deadline = int(config["data"].get("ANALYSIS_DEADLINE_SECONDS", DEFAULT_DEADLINE))
    grace = worker["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > 2 * deadline


@pytest.mark.parametrize(
    ("config", "grace"),
    [({"ANALYSIS_DEADLINE_SECONDS": "400"}, None), ({}, 2 * DEFAULT_DEADLINE)],
    ids=["deadline-raised", "grace-cut"],
)
def test_a_grace_shorter_than_the_task_limit_does_not_render(
    config: dict[str, str], grace: int | None, render_with: Any
) -> None:
    """The rule above holds for values set at install time too (`--set`), not only for the
    committed values files: the chart refuses to render against it."""
    short = {} if grace is None else {"terminationGracePeriodSeconds": grace}
    with pytest.raises(helm.HelmError, match="terminationGracePeriodSeconds"):
        render_with("waste", "prod", {"config": config, "workers": {"worker": short}})
    limit = 2 * int(config.get("ANALYSIS_DEADLINE_SECONDS", DEFAULT_DEADLINE))
    longer = {"terminationGracePeriodSeconds": limit + 1}
    render_with("waste", "prod", {"config": config, "workers": {"worker": longer}})


@pytest.mark.parametrize(
    "worker_values",
    [{"keda": {"minReplicaCount": 0}}, {"keda": {"enabled": False}, "replicas": 0}],
    ids=["keda-to-zero", "no-replicas"],
)
def test_a_worker_always_runs_the_reaper(worker_values: dict[str, Any], render_with: Any) -> None:
    """The reaper runs in the workers only (worker.py): it re-sends analyses the API committed but
    could not enqueue, and takes back those of a worker that died mid-task, neither of which is
    in the list KEDA counts. Scaled to zero on an empty list, nothing would run it, and such
    analyses would stay `queued` or `processing` until the next upload woke a worker."""
    with pytest.raises(helm.HelmError, match="minimum"):
        render_with("waste", "prod", {"workers": {"worker": worker_values}})


def idle_api_rss_bytes(command: list[str], config: dict[str, str]) -> int:
    """Resident memory of a fresh process that has imported the API's ASGI app (uvicorn's
    target) with the chart's plain settings: a floor under what the pod uses once it serves."""
    module = next(arg for arg in command if arg.endswith(":app")).split(":")[0]
    script = (
        f"import importlib; importlib.import_module({module!r}); "
        "print(open('/proc/self/status').read().split('VmRSS:')[1].split()[0])"
    )
    env = {**os.environ, **config}
    output = subprocess.run(
        [sys.executable, "-c", script], env=env, check=True, capture_output=True, text=True
    ).stdout
    return int(output.strip().splitlines()[-1]) * 1024


@pytest.mark.parametrize("env", ENVIRONMENTS)
@pytest.mark.parametrize("service", sorted(AUTOSCALED))
def test_api_memory_request_holds_an_idle_process(
    service: str, env: str, rendered: Rendered
) -> None:
    """The HPA scales on memory as a share of the request: a request the idle process already
    fills past the target keeps the API at maxReplicas for good, busy or not."""
    manifests = rendered[(service, env)]
    (hpa,) = of_kind(manifests, "HorizontalPodAutoscaler")
    (memory,) = [m for m in hpa["spec"]["metrics"] if m["resource"]["name"] == "memory"]
    (api,) = [d for d in of_kind(manifests, "Deployment") if d["metadata"]["name"] == service]
    (container,) = api["spec"]["template"]["spec"]["containers"]
    (config,) = of_kind(manifests, "ConfigMap")
    request = quantity(container["resources"]["requests"]["memory"])
    target = request * memory["resource"]["target"]["averageUtilization"] / 100
    idle = idle_api_rss_bytes(container["command"], config["data"])
    assert idle < target, f"{env}: idle API {idle / 2**20:.0f} MiB, target {target / 2**20:.0f} MiB"
