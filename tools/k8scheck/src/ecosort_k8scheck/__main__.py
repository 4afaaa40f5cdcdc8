"""`make lint-k8s`: render and validate every Kubernetes artefact offline.

  uv run --frozen python -m ecosort_k8scheck [--skip-checkov]

Exit status 0 when every check passes, 1 otherwise; each finding is printed with where it is.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

from ecosort_k8scheck import checks
from ecosort_k8scheck.validate import Finding


def _report(name: str, started: float, findings: list[Finding], note: str = "") -> bool:
    status = "ok" if not findings else f"FAILED ({len(findings)})"
    print(f"{name:<44} {status:<12} {time.monotonic() - started:6.1f}s {note}".rstrip())
    for finding in findings:
        print(f"    {finding}")
    return not findings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ecosort_k8scheck", description=__doc__)
    parser.add_argument("--skip-checkov", action="store_true", help="leave checkov out (slow)")
    args = parser.parse_args(argv)

    ok = True
    started = time.monotonic()
    objects = checks.all_objects()
    ok &= _report(
        "helm render --strict (5 charts x dev/prod)", started, [], f"{len(objects)} objects"
    )

    simple: list[tuple[str, Callable[[], list[Finding]]]] = [
        ("helm lint --strict (k8s 1.31, 1.34)", checks.helm_lint),
        ("kubernetes-validate --strict + CRD schemas", lambda: checks.schemas(objects)),
        ("ingress-nginx annotations: no High/Critical", lambda: checks.annotations_of(objects)),
        ("hadolint", checks.hadolint),
        ("skaffold.yaml schema (v4beta14)", checks.skaffold),
    ]
    for name, check in simple:
        started = time.monotonic()
        ok &= _report(name, started, check())

    started = time.monotonic()
    cel = checks.cel_rules(objects)
    note = f"{cel.evaluated} rules evaluated, {cel.skipped} skipped (oldSelf/extensions)"
    ok &= _report("CRD CEL rules", started, cel.findings, note)

    if not args.skip_checkov:
        started = time.monotonic()
        findings, summary = checks.checkov(objects)
        note = ", ".join(f"{k} {v}" for k, v in summary.items())
        ok &= _report("checkov (manifests + Dockerfiles)", started, findings, note)

    print("lint-k8s:", "all checks passed" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
