"""Round 4: compare backbone candidates (one ONNX file, or two whose features are joined) with
the service's own numpy head, calibration and not-sure rule. Runs in the service environment:

    uv run --frozen python services/waste/ml/evaluate_candidates.py \
        --candidate lite0=/work/ml-work/efficientnet-lite0-ft.onnx \
        --candidate lite2=/work/ml-work/lite2-ft.onnx \
        --candidate lite0+lite2=/work/ml-work/efficientnet-lite0-ft.onnx,/work/ml-work/lite2-ft.onnx

- Everything is chosen on the calibration split: the head's L2 (top-1, then log-loss),
  temperature, typicality and not-sure thresholds (training.calibrate, the service's rules).
- An ensemble's head reads the features of both networks side by side (one softmax
  regression over 2 x 1280 features); the ImageNet outputs come from the first file.
  "avg" rows average the two single heads' calibrated probabilities instead (class level only).
- `--validation NAME` scores the validation split for that candidate only: do it once, for a
  finalist chosen on calibration. `--cost` times onnxruntime (1 thread, batch 1).
- Features (centre crop and mirror of each photo, at the file's own input size) are cached
  in /work/ml-work by file checksum.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from ecosort_waste.classifier.categories import TRASHNET_CLASSES
from ecosort_waste.classifier.decision import class_code
from ecosort_waste.classifier.head import Head
from ecosort_waste.classifier.local import MODELS_DIR, OnnxBackbone
from ecosort_waste.classifier.training import (
    L2_GRID,
    Examples,
    better,
    cached_extract,
    calibrate,
    centre_view_only,
    evaluate,
    feature_cache_file,
    fit_head,
    fit_pooled_head,
    joined,
    l2_row,
    load_split,
    photos_dir,
)

WORK_DIR = Path("/work/ml-work")


def features(backbone: OnnxBackbone, part: str, files: list[str]) -> Examples:
    labels = [TRASHNET_CLASSES.index(f.split("/")[0]) for f in files]
    cache = feature_cache_file(WORK_DIR, backbone, part)
    return cached_extract(backbone, [photos_dir() / f for f in files], labels, cache)


def choose_head(train: Examples, calibration: Examples, sha: str) -> tuple[Head, list[dict]]:
    """The L2 with the best calibration top-1 (log-loss breaks ties), then calibrated."""
    rows, best = [], None
    cal_x = calibration.features[:, 0]  # the centre view, what the service computes
    for l2 in L2_GRID:
        head = fit_head(train, TRASHNET_CLASSES, l2, sha)
        row = l2_row(l2, head.logits(cal_x), calibration.labels)
        rows.append(row)
        if best is None or better(row, best[1]):
            best = (head, row)
    assert best is not None
    head = replace(best[0], metrics={"l2": best[1]["l2"]})
    return calibrate(head, centre_view_only(calibration), class_codes()), rows


def class_codes() -> list[str]:
    return [class_code(c) for c in TRASHNET_CLASSES]


def per_class_recall(predicted: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    return {
        c: round(float((predicted[labels == k] == k).mean()), 3)
        for k, c in enumerate(TRASHNET_CLASSES)
    }


def report(head: Head, examples: Examples) -> dict:
    centre = centre_view_only(examples)
    out = evaluate(head, centre, class_codes())
    predicted = head.logits(centre.features[:, 0]).argmax(1)
    out["per_class_recall"] = per_class_recall(predicted, centre.labels)
    out["confusions"] = {
        f"{TRASHNET_CLASSES[t]}->{TRASHNET_CLASSES[p]}": int(n)
        for (t, p), n in zip(
            *np.unique(np.stack([centre.labels, predicted], 1), axis=0, return_counts=True),
            strict=True,
        )
        if t != p
    }
    return out


def cost_ms(paths: list[Path], repeats: int) -> dict:
    """onnxruntime, 1 thread, batch 1: median and fastest ms per image (all files in turn)."""
    sessions = [OnnxBackbone(p, intra_op_threads=1) for p in paths]
    inputs = [
        np.random.default_rng(0).standard_normal((1, 3, s, s), np.float32)
        for s in (session.input_size for session in sessions)
    ]
    for session, x in zip(sessions, inputs, strict=True):
        for _ in range(5):
            session.run(x)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        for session, x in zip(sessions, inputs, strict=True):
            session.run(x)
        times.append(1000 * (time.perf_counter() - started))
    return {"median_ms": round(float(np.median(times)), 2), "min_ms": round(min(times), 2)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--candidate", action="append", default=[], help="NAME=file[,file]")
    parser.add_argument("--validation", default="", help="score validation for this NAME (once)")
    parser.add_argument(
        "--pooled", action="store_true", help="also a head on train + calibration (CV-tuned)"
    )
    parser.add_argument("--cost", type=int, default=0, help="timed runs per candidate")
    args = parser.parse_args()
    split = load_split()
    backbones: dict[Path, OnnxBackbone] = {}
    results = {}
    for spec in args.candidate:
        name, files = spec.split("=", 1)
        # "artifacts/NAME" is the committed file; anything else a path.
        paths = [
            MODELS_DIR / f.removeprefix("artifacts/") if f.startswith("artifacts/") else Path(f)
            for f in files.split(",")
        ]
        parts = {}
        for path in paths:
            if path not in backbones:
                backbones[path] = OnnxBackbone(path, intra_op_threads=2)
            b = backbones[path]
            parts[path] = {k: features(b, k, split[k]) for k in ("train", "calibration")}
            if args.validation == name:
                parts[path]["validation"] = features(b, "validation", split["validation"])
        sha = "+".join(backbones[p].sha256 for p in paths)
        data = {k: joined([parts[p][k] for p in paths]) for k in parts[paths[0]]}
        head, l2_rows = choose_head(data["train"], data["calibration"], sha)
        result = {
            "files": [str(p) for p in paths],
            "l2_on_calibration": l2_rows,
            "chosen_l2": head.metrics["l2"],
            "temperature": round(head.temperature, 3),
            "threshold": head.threshold,
            "calibration": report(head, data["calibration"]),
        }
        if len(paths) == 2:
            # Probability averaging of the two single heads, class level, for comparison.
            singles = [
                choose_head(parts[p]["train"], parts[p]["calibration"], p.name)[0] for p in paths
            ]
            probs = np.mean(
                [
                    h.probabilities(parts[p]["calibration"].features[:, 0])
                    for h, p in zip(singles, paths, strict=True)
                ],
                axis=0,
            )
            labels = data["calibration"].labels
            result["avg_calibration_top1"] = round(float((probs.argmax(1) == labels).mean()), 4)
        if args.validation == name:
            result["validation"] = report(head, data["validation"])
        if args.pooled:
            pooled, summary, _ = fit_pooled_head(
                data["train"], data["calibration"], TRASHNET_CLASSES, sha
            )
            result["pooled"] = summary | {
                "temperature": round(pooled.temperature, 3),
                "threshold": pooled.threshold,
            }
            if args.validation == name:
                result["pooled"]["validation"] = report(pooled, data["validation"])
        if args.cost:
            result["cost"] = cost_ms(paths, args.cost)
        results[name] = result
        print(json.dumps({name: result}), flush=True)
    (WORK_DIR / "evaluate-candidates.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
