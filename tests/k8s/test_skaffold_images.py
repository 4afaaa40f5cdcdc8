"""skaffold builds the images the charts run and deploys each chart in its own namespace."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from ecosort_k8scheck.charts import Rendered, of_kind, pod_templates
from ecosort_k8scheck.paths import SERVICES


def image_key(image: str) -> str:
    """skaffold's template variable suffix for an image: ecosort/waste -> ecosort_waste."""
    return re.sub(r"[^A-Za-z0-9]", "_", image)


def test_one_artifact_per_service_built_from_the_repo_root(
    skaffold: dict[str, Any], root: Path
) -> None:
    artifacts = skaffold["build"]["artifacts"]
    assert sorted(a["image"] for a in artifacts) == sorted(f"ecosort/{s}" for s in SERVICES)
    for artifact in artifacts:
        assert artifact["context"] == "."  # the uv workspace and its lock file
        assert (root / artifact["docker"]["dockerfile"]).is_file()
        assert artifact["docker"]["dockerfile"] == "Dockerfile"
        assert artifact["docker"]["buildArgs"] == {"SERVICE": artifact["image"].split("/")[1]}


def test_releases_set_the_image_the_chart_runs(
    skaffold: dict[str, Any], rendered: Rendered, root: Path
) -> None:
    artifacts = {image_key(a["image"]): a["image"] for a in skaffold["build"]["artifacts"]}
    releases = skaffold["deploy"]["helm"]["releases"]
    assert sorted(r["name"] for r in releases) == sorted(SERVICES)
    for release in releases:
        service = release["name"]
        assert release["chartPath"] == f"charts/{service}"
        assert release["namespace"] == f"ecosort-{service}"
        assert all((root / f).is_file() for f in release["valuesFiles"])
        templates = release["setValueTemplates"]
        (repo_key,) = re.findall(r"\{\{\.IMAGE_REPO_(\w+)\}\}", templates["image.repository"])
        (tag_key,) = re.findall(r"\{\{\.IMAGE_TAG_(\w+)\}\}", templates["image.tag"])
        assert repo_key == tag_key
        image = artifacts[repo_key]
        # The chart's own default names the same image, and every pod of the chart runs it.
        defaults = yaml.safe_load((root / release["chartPath"] / "values.yaml").read_text())
        assert defaults["image"]["repository"] == image
        for env in ("dev", "prod"):
            for workload, pod in pod_templates(rendered[(service, env)]):
                for container in pod["containers"]:
                    assert container["image"].split(":")[0].split("@")[0] == image, workload


def test_prod_profile_switches_values_and_pins_digests(skaffold: dict[str, Any]) -> None:
    releases = skaffold["deploy"]["helm"]["releases"]
    (prod,) = [p for p in skaffold["profiles"] if p["name"] == "prod"]
    patched: dict[str, dict[str, str]] = {}
    for patch in prod["patches"]:
        match = re.fullmatch(
            r"/deploy/helm/releases/(\d+)/(valuesFiles/0|setValueTemplates/image\.digest)",
            patch["path"],
        )
        assert match, patch["path"]
        release = releases[int(match.group(1))]["name"]
        patched.setdefault(release, {})[match.group(2)] = patch["value"]
    assert sorted(patched) == sorted(SERVICES)
    for service, values in patched.items():
        assert values["valuesFiles/0"] == f"charts/{service}/values-prod.yaml"
        assert (
            values["setValueTemplates/image.digest"] == f"{{{{.IMAGE_DIGEST_ecosort_{service}}}}}"
        )
    assert prod["build"]["local"]["push"] is True


def test_dev_loop_applies_the_namespaces_first(skaffold: dict[str, Any]) -> None:
    (hook,) = skaffold["deploy"]["helm"]["hooks"]["before"]
    assert hook["host"]["command"] == ["kubectl", "apply", "-f", "k8s/namespaces/"]
    assert all(r["createNamespace"] is False for r in skaffold["deploy"]["helm"]["releases"])


def go_duration_seconds(text: str) -> float:
    """A Go duration as helm takes it for --timeout ("10m", "1m30s", "600s")."""
    units = {"h": 3600, "m": 60, "s": 1}
    parts = re.findall(r"(\d+(?:\.\d+)?)([hms])", text)
    assert parts and "".join(n + u for n, u in parts) == text, text
    return sum(float(number) * units[unit] for number, unit in parts)


def test_helm_waits_for_a_migration_as_long_as_its_job_may_run(
    skaffold: dict[str, Any], rendered: Rendered
) -> None:
    """The migration hook Job may run up to its activeDeadlineSeconds (an index built
    CONCURRENTLY waits for older transactions, docs/deploy.md). helm waits for a hook only
    --timeout (5 min by default): past it, the release fails while the migration goes on, and the
    next deploy's before-hook-creation deletes the Job mid-migration."""
    flags = skaffold["deploy"]["helm"].get("flags", {})
    for command in ("install", "upgrade"):
        arguments = flags.get(command, [])
        assert "--timeout" in arguments, f"helm {command} waits 5 min for the migration hook"
        timeout = go_duration_seconds(arguments[arguments.index("--timeout") + 1])
        for (service, env), manifests in rendered.items():
            for job in of_kind(manifests, "Job"):
                assert timeout >= job["spec"]["activeDeadlineSeconds"], (command, service, env)
