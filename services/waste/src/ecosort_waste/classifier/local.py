"""The offline provider: EfficientNet-Lite0 (ONNX, onnxruntime) and the trained numpy head."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray
from PIL import Image

from . import preprocess
from .base import Candidate, Classification
from .categories import mapping_note
from .decision import decide, is_sure
from .head import Head, HeadError, current_head_path, load_head

MODELS_DIR = Path(__file__).resolve().parent / "artifacts"
# int8 (ml/quantize_onnx.py): half the CPU time of the fp32 export, same calibration accuracy.
ONNX_FILE = "efficientnet-lite0-ft-int8.onnx"
MODEL_NAME = "efficientnet-lite0-ft-int8"
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
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.path = path
        self.sha256 = file_sha256(path)
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        # The side of the square the network reads, as the file says (quantize_onnx.py sets it).
        self.input_size = int(self.session.get_inputs()[0].shape[2])

    @property
    def version(self) -> str:
        return f"{MODEL_NAME}@{self.sha256[:8]}"

    def run(self, batch: NDArray[np.float32]) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        features, imagenet_logits = self.session.run(None, {"image": batch})
        return np.asarray(features, np.float32), np.asarray(imagenet_logits, np.float32)


class LocalClassifier:
    name = "local"

    def __init__(
        self,
        models_dir: Path | None = None,
        heads_dir: Path | None = None,
        intra_op_threads: int = 1,
        test_time_augmentation: bool | None = None,
    ) -> None:
        self.models_dir = models_dir or MODELS_DIR
        # Retrained heads may live outside the (read-only, baked-in) models folder.
        self.heads_dir = heads_dir or self.models_dir / "heads"
        self.backbone = OnnxBackbone(self.models_dir / ONNX_FILE, intra_op_threads)
        # None: as the head was calibrated (its file says); True/False overrides, e.g. to bench.
        self.test_time_augmentation = test_time_augmentation
        self._lock = threading.Lock()
        self._head_path: Path | None = None
        self._head: Head | None = None
        self.head  # noqa: B018 - fail at start-up, not on the first photo, if the head is unusable

    @property
    def head(self) -> Head:
        """The head the `current` pointer names, reloaded when a retrain moves the pointer."""
        path = current_head_path(self.heads_dir)
        with self._lock:
            if path != self._head_path or self._head is None:
                head = load_head(path)
                if head.backbone_sha256 and head.backbone_sha256 != self.backbone.sha256:
                    raise HeadError(f"{path.name} was trained on another backbone file")
                self._head, self._head_path = head, path
            return self._head

    def classify(self, image: Image.Image) -> Classification:
        head = self.head
        tta = self.test_time_augmentation
        if tta if tta is not None else head.test_time_augmentation:
            batch = preprocess.tta_batch(image, self.backbone.input_size)
        else:
            batch = preprocess.model_input(image, self.backbone.input_size)[None]
        features, imagenet_logits = self.backbone.run(batch)
        decision = decide(head, features, imagenet_logits)
        blank = _is_blank(batch[0])
        sure = is_sure(decision, head) and not blank
        category, confidence = decision.top
        return Classification(
            category=category if sure else None,
            confidence=round(confidence, 4),
            candidates=[Candidate(c, round(p, 4)) for c, p in decision.ranked[:TOP_CANDIDATES]],
            not_sure=not sure,
            model_version=self.backbone.version,
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
    pixels = normalized.transpose(1, 2, 0) * preprocess.STD_RGB + preprocess.MEAN_RGB
    return float(pixels.reshape(-1, 3).std(axis=0).max()) < BLANK_STD
