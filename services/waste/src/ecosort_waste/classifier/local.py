"""The offline provider: two EfficientNet-Lite networks (ONNX, onnxruntime) read side by side
by the trained numpy head."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import numpy as np
import onnxruntime as ort
import structlog
from numpy.typing import NDArray
from PIL import Image

from . import preprocess
from .base import Candidate, Classification
from .categories import mapping_note
from .decision import answer, is_sure
from .head import MODELS_DIR, Head, HeadError, current_head_path, load_head
from .onnx_options import session_options

log = structlog.get_logger(__name__)

# The head reads the pooled features of both networks side by side (MODEL_CARD.md, round 6:
# validation 0.949 against 0.903 for Lite0 alone); the ImageNet outputs that answer for what
# TrashNet lacks (textiles, appliances, food) come from the first. Both int8
# (ml/quantize_onnx.py): half the CPU time of their fp32 exports.
ONNX_FILES = ("efficientnet-lite0-ft-int8.onnx", "efficientnet-lite2-ft-int8.onnx")
TOP_CANDIDATES = 3
# A photo with (almost) no contrast shows nothing to classify; the network would still guess.
BLANK_STD = 0.02


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class OnnxBackbone:
    """One onnxruntime session, made once; `run` returns (features, imagenet_logits)."""

    def __init__(self, path: Path, intra_op_threads: int = 1) -> None:
        self.path = path
        self.sha256 = file_sha256(path)
        self.session = ort.InferenceSession(
            str(path), session_options(intra_op_threads), providers=["CPUExecutionProvider"]
        )
        # The side of the square the network reads, as the file says (quantize_onnx.py sets it).
        self.input_size = int(self.session.get_inputs()[0].shape[2])

    @property
    def version(self) -> str:
        return f"{self.path.stem}@{self.sha256[:8]}"

    def views(self, image: Image.Image, tta: bool) -> NDArray[np.float32]:
        """The batch this network reads: the centre crop, and its mirror image with `tta`."""
        if tta:
            return preprocess.tta_batch(image, self.input_size)
        return preprocess.model_input(image, self.input_size)[None]

    def run(self, batch: NDArray[np.float32]) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        features, imagenet_logits = self.session.run(None, {"image": batch})
        return np.asarray(features, np.float32), np.asarray(imagenet_logits, np.float32)


class Backbones:
    """The networks of ONNX_FILES, in order: a head reads their features side by side."""

    def __init__(self, models_dir: Path, intra_op_threads: int = 1) -> None:
        self.members = tuple(OnnxBackbone(models_dir / f, intra_op_threads) for f in ONNX_FILES)
        # What a head records and checks: it is only valid on exactly these files.
        self.sha256 = "+".join(member.sha256 for member in self.members)
        self.version = "+".join(member.version for member in self.members)


class LocalClassifier:
    name = "local"

    def __init__(
        self,
        models_dir: Path | None = None,
        heads_dir: Path | None = None,
        intra_op_threads: int = 1,
        test_time_augmentation: bool | None = None,
        cascade: bool = False,
    ) -> None:
        self.models_dir = models_dir or MODELS_DIR
        # Retrained heads may live outside the (read-only, baked-in) models folder.
        self.heads_dir = heads_dir or self.models_dir / "heads"
        self.backbones = Backbones(self.models_dir, intra_op_threads)
        # None: as the head was calibrated (its file says); True/False overrides, e.g. to bench.
        self.test_time_augmentation = test_time_augmentation
        # Whether the head's first stage may answer alone (CLASSIFIER_CASCADE).
        self.cascade = cascade
        self._lock = threading.Lock()
        self._head_path: Path | None = None
        self._head: Head | None = None
        # The pointer's target last refused, and why: not read again until the pointer moves.
        self._refused_path: Path | None = None
        self._refused_reason = ""
        self.head  # noqa: B018 - fail at start-up, not on the first photo, if the head is unusable

    @property
    def head(self) -> Head:
        """The head the `current` pointer names, reloaded when a retrain moves the pointer.
        A pointer or file that cannot be used keeps the head already loaded (logged once per
        pointer): a bad retrain must not stop the photos a good head was answering."""
        with self._lock:
            path: Path | None = None
            try:
                path = current_head_path(self.heads_dir)
                if self._head is None or path not in (self._head_path, self._refused_path):
                    self._head, self._head_path = self._load(path), path
            except HeadError as exc:
                if self._head is None:
                    raise  # at start-up: there is nothing to keep
                if str(exc) != self._refused_reason:
                    log.error("classifier.head_not_reloaded", reason=str(exc))
                self._refused_path, self._refused_reason = path, str(exc)
            return self._head

    def _load(self, path: Path) -> Head:
        head = load_head(path)
        first = head.first_stage
        if (head.backbone_sha256 and head.backbone_sha256 != self.backbones.sha256) or (
            first is not None and first.backbone_sha256 != self.backbones.members[0].sha256
        ):
            raise HeadError(f"{path.name} was trained on other backbone files")
        return head

    def classify(self, image: Image.Image) -> Classification:
        head = self.head
        tta = self.test_time_augmentation
        if tta is None:
            tta = head.test_time_augmentation
        first, *others = self.backbones.members
        first_views = first.views(image, tta)
        first_features, imagenet_logits = first.run(first_views)
        ran = [first]

        def other_features() -> NDArray[np.float32]:
            ran.extend(others)
            return np.concatenate([m.run(m.views(image, tta))[0] for m in others], axis=-1)

        decision, decider = answer(
            head, first_features, imagenet_logits, other_features, cascade=self.cascade
        )
        blank = _is_blank(first_views[0])
        sure = is_sure(decision, decider) and not blank
        category, confidence = decision.top
        return Classification(
            category=category if sure else None,
            confidence=round(confidence, 4),
            candidates=[Candidate(c, round(p, 4)) for c, p in decision.ranked[:TOP_CANDIDATES]],
            not_sure=not sure,
            model_version="+".join(network.version for network in ran),
            head_version=head.version,
            mapping_note=mapping_note(category if sure else None),
            details={
                "head_probabilities": {
                    k: round(v, 4) for k, v in decision.head_probabilities.items()
                },
                "imagenet_share": round(decision.imagenet_share, 4),
                "typicality": round(decision.typicality, 4),
                "atypical": decision.atypical,
                "blank": blank,
            },
        )


def _is_blank(normalized: NDArray[np.float32]) -> bool:
    # Normalising scales channel c by 1/STD_RGB[c]: its spread in [0, 1] pixel units is back
    # by multiplying the spread of the CHW input, without un-normalising every pixel.
    spread = normalized.reshape(3, -1).std(axis=1) * preprocess.STD_RGB
    return float(spread.max()) < BLANK_STD
