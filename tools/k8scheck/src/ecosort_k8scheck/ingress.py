"""The Ingress objects may use only ingress-nginx annotations the project's risk table rates Low or
Medium (../shared/schemas/ingress-nginx-annotations-risk.md): no High or Critical ones (snippets,
external auth URLs, mirroring...)."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import Any

from ecosort_k8scheck.paths import schemas_dir
from ecosort_k8scheck.validate import Finding

PREFIX = "nginx.ingress.kubernetes.io/"
ALLOWED_RISKS = frozenset({"Low", "Medium"})
_ROW = re.compile(r"^\|\s*[^|]+\|\s*([a-z0-9-]+)\s*\|\s*(\w+)\s*\|")


@cache
def annotation_risks(table: Path | None = None) -> dict[str, str]:
    """annotation name (without the prefix) -> risk, parsed from the markdown table."""
    text = (table or schemas_dir() / "ingress-nginx-annotations-risk.md").read_text()
    risks = {}
    for line in text.splitlines():
        match = _ROW.match(line)
        if match:
            risks[match.group(1)] = match.group(2)
    if not risks:
        raise RuntimeError("no annotations parsed from the risk table")
    return risks


def check_annotations(doc: dict[str, Any], where: str) -> list[Finding]:
    findings = []
    annotations = doc.get("metadata", {}).get("annotations") or {}
    for key in annotations:
        if not key.startswith(PREFIX):
            continue
        name = key.removeprefix(PREFIX)
        risk = annotation_risks().get(name)
        if risk is None:
            findings.append(Finding(where, f"{key} is not in the risk table"))
        elif risk not in ALLOWED_RISKS:
            findings.append(Finding(where, f"{key} is rated {risk}: not allowed"))
    return findings
