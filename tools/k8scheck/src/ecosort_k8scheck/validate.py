"""Schema validation of Kubernetes objects, offline.

Built-in kinds go through kubernetes-validate in strict mode (unknown fields fail) for each
Kubernetes version we support. The CRD kinds we use (KEDA, Gateway API) are validated against the
openAPIV3Schema of the CRDs in the shared schemas folder, made strict the way the API server's
strict field validation is: an object schema that lists its properties rejects any other field,
unless it says x-kubernetes-preserve-unknown-fields. Any other kind is an error.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

from ecosort_k8scheck.paths import schemas_dir

# kind -> CRD file in the shared schemas folder.
CRD_FILES: dict[str, str] = {
    "ScaledObject": "keda.sh_scaledobjects.yaml",
    "TriggerAuthentication": "keda.sh_triggerauthentications.yaml",
    "HTTPRoute": "gateway.networking.k8s.io_httproutes.yaml",
    "Gateway": "gateway.networking.k8s.io_gateways.yaml",
}


@dataclass(frozen=True)
class Finding:
    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


def strict_schema(schema: Any) -> Any:
    """A copy of an OpenAPI v3 schema in which listed properties are the only ones allowed."""
    if isinstance(schema, list):
        return [strict_schema(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    result = {key: strict_schema(value) for key, value in schema.items()}
    if (
        "properties" in result
        and "additionalProperties" not in result
        and not result.get("x-kubernetes-preserve-unknown-fields")
    ):
        result["additionalProperties"] = False
    return result


@cache
def crd_schema(kind: str, api_version: str) -> dict[str, Any] | None:
    """The strict openAPIV3Schema of a CRD kind at the object's version, or None if not served."""
    crd = yaml.safe_load((schemas_dir() / CRD_FILES[kind]).read_text())
    group, _, version = api_version.rpartition("/")
    if crd["spec"]["group"] != group:
        return None
    for served in crd["spec"]["versions"]:
        if served["name"] == version and served.get("served", True):
            schema = copy.deepcopy(served["schema"]["openAPIV3Schema"])
            # metadata is validated by the API server itself, not by the CRD schema.
            schema.get("properties", {}).pop("metadata", None)
            schema = strict_schema(schema)
            schema["properties"]["metadata"] = {"type": "object"}
            return schema
    return None


def crd_rules(kind: str, api_version: str) -> list[tuple[str, str, str]]:
    """The CEL rules (x-kubernetes-validations) of a CRD version: (JSON path, rule, message)."""
    schema = crd_schema(kind, api_version) or {}
    rules: list[tuple[str, str, str]] = []

    def walk(node: Any, path: str) -> None:
        if not isinstance(node, dict):
            return
        for rule in node.get("x-kubernetes-validations", []):
            rules.append((path, rule["rule"], rule.get("message", rule["rule"])))
        for name, child in node.get("properties", {}).items():
            walk(child, f"{path}.{name}")
        if isinstance(node.get("items"), dict):
            walk(node["items"], f"{path}[]")

    walk(schema, "")
    return rules


def validate_crd_object(doc: dict[str, Any], where: str) -> list[Finding]:
    kind, api_version = doc["kind"], doc.get("apiVersion", "")
    schema = crd_schema(kind, api_version)
    if schema is None:
        return [Finding(where, f"{kind} {api_version} is not served by {CRD_FILES[kind]}")]
    validator = jsonschema.Draft7Validator(schema)
    return [
        Finding(where, f"{kind} {'.'.join(map(str, error.absolute_path))}: {error.message}")
        for error in validator.iter_errors(doc)
    ]


def validate_object(doc: dict[str, Any], where: str, kube_version: str) -> list[Finding]:
    """Findings for one object; an unknown kind is a finding, never a warning."""
    kind = doc.get("kind")
    if not isinstance(kind, str) or "apiVersion" not in doc:
        return [Finding(where, "not a Kubernetes object (kind/apiVersion missing)")]
    if kind in CRD_FILES:
        return validate_crd_object(doc, where)
    try:
        kubernetes_validate.validate(doc, kube_version, strict=True)
    except kubernetes_validate.ValidationError as error:
        path = ".".join(str(item) for item in error.path)
        return [Finding(where, f"{kind} (k8s {kube_version}) {path}: {error.message}")]
    except kubernetes_validate.SchemaNotFoundError as error:
        return [Finding(where, error.message)]
    return []


def load_documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
