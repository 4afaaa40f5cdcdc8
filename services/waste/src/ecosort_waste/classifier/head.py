"""The trained head: a linear softmax layer over the backbone's 1280-d features, stored as
versioned `.npz` files beside a `current` pointer, plus its calibration (temperature and the
not-sure threshold)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .categories import CATEGORY_CODES, TRASHNET_CLASSES

# The networks and heads shipped in the package; the heads folder is the default one.
MODELS_DIR = Path(__file__).resolve().parent / "artifacts"
CURRENT_POINTER = "current"
_VERSION_FILE = re.compile(r"^head-v(\d+)\.npz$")


class HeadError(RuntimeError):
    """A head file that is missing, malformed or made for another backbone."""


@dataclass(frozen=True)
class Head:
    version: str  # "head-v3"
    weights: NDArray[np.float32]  # (features, classes)
    bias: NDArray[np.float32]  # (classes,)
    temperature: float
    threshold: float  # calibrated top-1 probability below which the answer is "not sure"
    classes: tuple[str, ...] = TRASHNET_CLASSES
    # Mean feature per class, and the cosine similarity to it below which a photo counts as
    # unlike anything the head was trained on (a blank or synthetic image, say).
    centroids: NDArray[np.float32] | None = None
    typicality_threshold: float = -1.0
    backbone_sha256: str = ""  # the ONNX files whose features it reads ("+"-joined sha256s)
    # Whether the service averages the mirrored view too; the thresholds were calibrated so.
    test_time_augmentation: bool = False
    metrics: dict[str, Any] = field(default_factory=dict)
    # A cascade (decision.answer): a head over the first network's features alone, whose answer
    # stands when its calibrated confidence reaches `first_stage_accept`; only the other photos
    # pay for the other networks.
    first_stage: Head | None = None
    first_stage_accept: float = 1.0

    def logits(self, features: NDArray[np.float32]) -> NDArray[np.float32]:
        return np.asarray(features @ self.weights + self.bias, dtype=np.float32)

    def probabilities(self, features: NDArray[np.float32]) -> NDArray[np.float32]:
        """Calibrated class probabilities, one row per feature row."""
        return softmax(self.logits(features) / self.temperature)


def softmax(logits: NDArray[np.floating[Any]]) -> NDArray[np.float32]:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return np.asarray(exp / exp.sum(axis=-1, keepdims=True), dtype=np.float32)


def save_head(head: Head, path: Path) -> None:
    arrays = _arrays(head)
    if head.first_stage is not None:
        arrays |= {f"first_{k}": v for k, v in _arrays(head.first_stage).items()}
        arrays["first_stage_accept"] = np.float32(head.first_stage_accept)
    np.savez(path, **arrays)


def _arrays(head: Head) -> dict[str, Any]:
    return {
        "weights": head.weights.astype(np.float32),
        "bias": head.bias.astype(np.float32),
        "temperature": np.float32(head.temperature),
        "threshold": np.float32(head.threshold),
        "classes": np.array(head.classes),
        "centroids": (
            head.centroids.astype(np.float32)
            if head.centroids is not None
            else np.zeros((0, head.weights.shape[0]), np.float32)
        ),
        "typicality_threshold": np.float32(head.typicality_threshold),
        "backbone_sha256": np.array(head.backbone_sha256),
        "test_time_augmentation": np.array(head.test_time_augmentation),
        "metrics": np.array(json.dumps(head.metrics, sort_keys=True)),
    }


def load_head(path: Path) -> Head:
    try:
        with np.load(path, allow_pickle=False) as data:
            head = _head(data, path.stem)
            if "first_weights" in data:
                first = _check(_head(data, path.stem, prefix="first_"), path)
                head = replace(
                    head,
                    first_stage=first,
                    first_stage_accept=float(data["first_stage_accept"]),
                )
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise HeadError(f"cannot read head file {path}: {exc}") from exc
    return _check(head, path)


def _head(data: Any, version: str, prefix: str = "") -> Head:
    centroids = data[prefix + "centroids"].astype(np.float32)
    return Head(
        version=version,
        weights=data[prefix + "weights"].astype(np.float32),
        bias=data[prefix + "bias"].astype(np.float32),
        temperature=float(data[prefix + "temperature"]),
        threshold=float(data[prefix + "threshold"]),
        classes=tuple(str(c) for c in data[prefix + "classes"]),
        centroids=centroids if len(centroids) else None,
        typicality_threshold=float(data[prefix + "typicality_threshold"]),
        backbone_sha256=str(data[prefix + "backbone_sha256"]),
        test_time_augmentation=bool(data[prefix + "test_time_augmentation"]),
        metrics=json.loads(str(data[prefix + "metrics"])),
    )


def _check(head: Head, path: Path) -> Head:
    # The TrashNet classes first; classes added from corrections are category codes.
    classes = head.classes
    extra = classes[len(TRASHNET_CLASSES) :]
    if classes[: len(TRASHNET_CLASSES)] != TRASHNET_CLASSES or not set(extra) <= set(
        CATEGORY_CODES
    ):
        raise HeadError(f"{path}: unexpected classes {classes}")
    if head.weights.shape != (head.weights.shape[0], len(classes)) or head.temperature <= 0:
        raise HeadError(f"{path}: malformed weights or temperature")
    return head


def current_head_path(heads_dir: Path) -> Path:
    pointer = heads_dir / CURRENT_POINTER
    try:
        name = pointer.read_text().strip()
    except OSError as exc:
        raise HeadError(f"no current head pointer at {pointer}") from exc
    if not _VERSION_FILE.match(name):
        raise HeadError(f"{pointer} names {name!r}, not a head-v<N>.npz file")
    return heads_dir / name


def next_version_path(heads_dir: Path) -> Path:
    numbers = [
        int(m.group(1)) for p in heads_dir.glob("head-v*.npz") if (m := _VERSION_FILE.match(p.name))
    ]
    return heads_dir / f"head-v{max(numbers, default=0) + 1}.npz"


def publish_head(head: Head, heads_dir: Path) -> Path:
    """Write `head` as the next version, then switch `current` to it atomically (rename), so a
    running service never reads a half-written pointer or file.

    Trainers publishing at the same time take turns under a lock on the folder: each takes the
    next free version and points `current` at it, so `current` ends on the highest version
    (without the lock, the trainer that chose its number first could switch the pointer last).
    A version, once written, is never written again (`os.link` fails where rename would
    replace), even by a trainer on another host of a shared folder."""
    heads_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(suffix=".npz", dir=heads_dir, delete=False) as tmp:
        staged = Path(tmp.name)
    try:
        save_head(head, staged)
        os.chmod(staged, 0o644)  # private as created; the service user must read it
        with _folder_lock(heads_dir):
            path = _link_next_version(staged, heads_dir)
            _point_current_at(path)
    finally:
        staged.unlink()
    return path


def seed_heads(heads_dir: Path, packaged: Path) -> None:
    """Give a heads folder of its own (CLASSIFIER_HEADS_DIR) the packaged current head, once.

    The service then answers as shipped, and `train-head` numbers its heads on from the
    packaged one into this folder instead of writing into the package (in a checkout, files
    the repository tracks)."""
    if (heads_dir / CURRENT_POINTER).exists():
        return
    shipped = current_head_path(packaged)
    heads_dir.mkdir(parents=True, exist_ok=True)
    with _folder_lock(heads_dir):
        if (heads_dir / CURRENT_POINTER).exists():  # another process seeded it meanwhile
            return
        seeded = heads_dir / shipped.name
        if not seeded.exists():  # else written by a seeding that stopped before the pointer
            with tempfile.NamedTemporaryFile(suffix=".npz", dir=heads_dir, delete=False) as tmp:
                tmp.write(shipped.read_bytes())
            os.chmod(tmp.name, 0o644)
            os.replace(tmp.name, seeded)
        _point_current_at(seeded)


@contextlib.contextmanager
def _folder_lock(heads_dir: Path) -> Iterator[None]:
    folder = os.open(heads_dir, os.O_RDONLY)
    try:
        fcntl.flock(folder, fcntl.LOCK_EX)  # released when closed
        yield
    finally:
        os.close(folder)


def _point_current_at(path: Path) -> None:
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False) as pointer:
        pointer.write(path.name + "\n")
    os.chmod(pointer.name, 0o644)
    os.replace(pointer.name, path.parent / CURRENT_POINTER)


def _link_next_version(staged: Path, heads_dir: Path) -> Path:
    while True:
        path = next_version_path(heads_dir)
        try:
            os.link(staged, path)
            return path
        except FileExistsError:  # a trainer elsewhere that the lock does not reach took it
            continue
