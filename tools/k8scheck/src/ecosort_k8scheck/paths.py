"""Where the repository and the shared reference schemas are.

CI runs from a fresh clone with the shared folder beside it (`<repo>/../shared`), so nothing here
names an absolute path: the repository is found from this file, the schemas relative to it, and
both can be overridden from the environment.
"""

from __future__ import annotations

import os
from pathlib import Path

SERVICES: tuple[str, ...] = ("auth", "users", "waste", "recycling", "locations")
ENVIRONMENTS: tuple[str, ...] = ("dev", "prod")
# Kubernetes versions the rendered manifests must validate against.
KUBE_VERSIONS: tuple[str, ...] = ("1.31", "1.34")


def repo_root() -> Path:
    """The repository root: $ECOSORT_REPO_ROOT, else the first parent holding uv.lock."""
    override = os.environ.get("ECOSORT_REPO_ROOT")
    if override:
        return Path(override).resolve()
    for parent in Path(__file__).resolve().parents:
        if (parent / "uv.lock").is_file() and (parent / "charts").is_dir():
            return parent
    raise RuntimeError("repository root not found: set ECOSORT_REPO_ROOT")


def schemas_dir() -> Path:
    """The shared schemas: $ECOSORT_SCHEMAS_DIR, else <repo>/../shared/schemas."""
    override = os.environ.get("ECOSORT_SCHEMAS_DIR")
    path = Path(override) if override else repo_root().parent / "shared" / "schemas"
    if not path.is_dir():
        raise RuntimeError(f"schemas not found at {path}: set ECOSORT_SCHEMAS_DIR")
    return path.resolve()


def namespace_of(service: str) -> str:
    return f"ecosort-{service}"
