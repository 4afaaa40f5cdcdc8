"""Reads the Ingress objects in ingress/*.yaml: the single source of truth for gateway routes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ecosort_devstack.errors import StackError

ANNOTATION_PREFIX = "nginx.ingress.kubernetes.io/"


@dataclass(frozen=True)
class IngressRoute:
    """One `spec.rules[].http.paths[]` entry with the annotations of the Ingress holding it."""

    ingress: str  # metadata.name, for messages
    source: Path
    path: str
    path_type: str  # Prefix | Exact | ImplementationSpecific
    service: str  # backend.service.name
    service_port: str | int  # backend.service.port.name or .number
    annotations: dict[str, str]  # nginx.ingress.kubernetes.io/* with the prefix removed


def _routes_of(document: dict[str, Any], source: Path) -> list[IngressRoute]:
    metadata = document.get("metadata") or {}
    name = metadata.get("name", source.stem)
    annotations = {
        key.removeprefix(ANNOTATION_PREFIX): str(value)
        for key, value in (metadata.get("annotations") or {}).items()
        if key.startswith(ANNOTATION_PREFIX)
    }
    routes = []
    for rule in (document.get("spec") or {}).get("rules") or []:
        for entry in (rule.get("http") or {}).get("paths") or []:
            try:
                backend = entry["backend"]["service"]
                port = backend["port"]
                routes.append(
                    IngressRoute(
                        ingress=name,
                        source=source,
                        path=entry.get("path", "/"),
                        path_type=entry.get("pathType", "Prefix"),
                        service=backend["name"],
                        service_port=port.get("name", port.get("number")),
                        annotations=annotations,
                    )
                )
            except (KeyError, TypeError, AttributeError) as exc:
                raise StackError(
                    f"{source}: Ingress {name!r} has a path without backend.service "
                    f"name and port ({exc!r})"
                ) from exc
    return routes


def load_routes(ingress_dir: Path) -> list[IngressRoute]:
    """Every route of every Ingress under `ingress_dir` (other kinds, e.g. HTTPRoute, ignored)."""
    files = sorted(ingress_dir.glob("*.yaml")) + sorted(ingress_dir.glob("*.yml"))
    if not files:
        raise StackError(f"no Ingress objects found in {ingress_dir}")
    routes: list[IngressRoute] = []
    for source in files:
        try:
            documents = list(yaml.safe_load_all(source.read_text()))
        except yaml.YAMLError as exc:
            raise StackError(f"{source}: not valid YAML: {exc}") from exc
        for document in documents:
            if isinstance(document, dict) and document.get("kind") == "Ingress":
                routes.extend(_routes_of(document, source))
    seen: dict[tuple[str, str], IngressRoute] = {}
    for route in routes:
        key = (route.path, route.path_type)
        if key in seen:
            raise StackError(
                f"path {route.path} is declared twice: Ingress {seen[key].ingress!r} "
                f"and Ingress {route.ingress!r}"
            )
        seen[key] = route
    return routes
