"""The CEL rules (x-kubernetes-validations) of the CRDs, evaluated with cel-python.

The API server evaluates these on admission; offline we evaluate every rule that standard CEL can
express. Rules on updates (`oldSelf`) do not apply to a new object, and rules calling Kubernetes'
own CEL extensions (e.g. isURL, format) cannot be evaluated here: both are counted as skipped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from typing import Any

import celpy

from ecosort_k8scheck.validate import CRD_FILES, Finding, crd_rules

CRD_KINDS = frozenset(CRD_FILES)


@dataclass
class CelReport:
    findings: list[Finding] = field(default_factory=list)
    evaluated: int = 0
    skipped: int = 0


@cache
def _program(rule: str) -> Any:
    env = celpy.Environment()
    return env.program(env.compile(rule))


def _nodes_at(doc: Any, path: str) -> list[Any]:
    """The values a schema path ('.spec.rules[].matches[]') designates in an object."""
    nodes = [doc]
    for segment in filter(None, path.split(".")):
        name, many = segment.removesuffix("[]"), segment.endswith("[]")
        nodes = [n[name] for n in nodes if isinstance(n, dict) and name in n]
        if many:
            nodes = [item for n in nodes if isinstance(n, list) for item in n]
    return nodes


def check_rules(doc: dict[str, Any], where: str, report: CelReport) -> None:
    for path, rule, message in crd_rules(doc["kind"], doc.get("apiVersion", "")):
        nodes = _nodes_at(doc, path)
        if not nodes:
            continue
        if "oldSelf" in rule:
            report.skipped += 1
            continue
        try:
            program = _program(rule)
            results = [program.evaluate({"self": celpy.json_to_cel(node)}) for node in nodes]
        except Exception:  # an extension function standard CEL lacks, or a compile error
            report.skipped += 1
            continue
        if any(isinstance(result, celpy.CELEvalError) for result in results):
            report.skipped += 1
            continue
        report.evaluated += 1
        if not all(isinstance(result, celpy.celtypes.BoolType) and result for result in results):
            report.findings.append(Finding(where, f"{doc['kind']} {path or '.'}: {message}"))
