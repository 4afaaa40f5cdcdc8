"""Choose the numpy head's L2 strength on the calibration split (never the validation split),
and compare it with the fine-tuned torch classifier. Runs in the service environment:

    uv run --frozen python services/waste/ml/tune_numpy_head.py

Features are extracted once with the committed ONNX model and cached under /work/ml-work.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ecosort_waste.classifier.categories import TRASHNET_CLASSES
from ecosort_waste.classifier.local import MODELS_DIR, ONNX_FILE, OnnxBackbone
from ecosort_waste.classifier.training import (
    Examples,
    cached_extract,
    feature_cache_file,
    fit_softmax_regression,
    load_split,
    photos_dir,
)

WORK_DIR = Path("/work/ml-work")


def features(backbone: OnnxBackbone, name: str, files: list[str]) -> Examples:
    # The same cache file train_head(feature_cache=WORK_DIR) reads and writes.
    labels = [TRASHNET_CLASSES.index(f.split("/")[0]) for f in files]
    cache = feature_cache_file(WORK_DIR, backbone, name)
    return cached_extract(backbone, [photos_dir() / f for f in files], labels, cache)


def main() -> None:
    backbone = OnnxBackbone(MODELS_DIR / ONNX_FILE, intra_op_threads=2)
    split = load_split()
    train = features(backbone, "train", split["train"])
    calibration = features(backbone, "calibration", split["calibration"])
    x = train.features.reshape(-1, train.features.shape[-1])
    y = np.repeat(train.labels, 2)
    results = {}
    for l2 in (1e-4, 1e-3, 1e-2, 3e-2, 1e-1):
        weights, bias = fit_softmax_regression(x, y, len(TRASHNET_CLASSES), l2=l2)
        logits = calibration.features.mean(axis=1) @ weights + bias
        results[l2] = round(float((logits.argmax(1) == calibration.labels).mean()), 4)
        print(json.dumps({"l2": l2, "calibration_accuracy": results[l2]}), flush=True)
    print("best l2", max(results, key=lambda k: results[k]))


if __name__ == "__main__":
    main()
