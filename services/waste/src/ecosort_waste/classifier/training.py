"""Retrain the head without torch: features from the ONNX networks (onnxruntime), a softmax
regression fitted in numpy on the train and calibration photos (plus stored corrections), its
L2, temperature and not-sure threshold chosen from out-of-fold predictions on the calibration
photos, figures on the validation split, then a new versioned head file.

`make train-head` → `python -m ecosort_waste train-head` → `train_head(corrections)`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from .categories import CATEGORY_CODES, TRASHNET_CLASSES
from .decision import answer, class_code, decide, is_sure, sure_under
from .head import Head, HeadError, current_head_path, load_head, publish_head, save_head, softmax
from .local import MODELS_DIR, Backbones, OnnxBackbone

SPLIT_FILE = MODELS_DIR / "split.json"
# The shared photos sit beside the repository (../shared/data/waste-images); override by env.
DEFAULT_PHOTOS_DIR = MODELS_DIR.parents[6] / "shared" / "data" / "waste-images"
# A correction's category code → the TrashNet class it adds photos to. Other codes become
# classes of their own once they have MIN_NEW_CLASS_EXAMPLES photos.
CODE_TO_TRASHNET = {
    "paper": "paper",
    "glass_bottle": "glass",
    "can": "metal",
    "plastic": "plastic",
    "general": "trash",
}
MIN_NEW_CLASS_EXAMPLES = 5
L2_GRID = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1)  # the L2 is chosen out of fold on calibration photos
CALIBRATION_FOLDS = 5
STEPS = 400
TARGET_SURE_ACCURACY = 0.96  # accepted calibration answers at least this accurate (see card)
BATCH_IMAGES = 16
# A new head whose category accuracy on the validation photos is lower than the current head's
# on the same photos by more than this is not published unless asked for (`allow_worse`):
# corrections that teach new categories may cost a TrashNet photo or two, not more.
WORSE_TOLERANCE = 0.01

Log = Callable[[str], None]


class HeadNotBetter(RuntimeError):
    """The new head does worse on the validation photos than the head the service runs."""


@dataclass
class Examples:
    features: NDArray[np.float32]  # (images, views, features of every network side by side)
    imagenet_logits: NDArray[np.float32]  # (images, views, 1000)
    labels: NDArray[np.int64]  # class index per image


def photos_dir() -> Path:
    return Path(os.environ.get("WASTE_PHOTOS_DIR", DEFAULT_PHOTOS_DIR))


def load_split(limit_per_class: int | None = None) -> dict[str, list[str]]:
    split: dict[str, list[str]] = json.loads(SPLIT_FILE.read_text())
    parts = {name: split[name] for name in ("train", "calibration", "validation")}
    if limit_per_class is None:
        return parts
    return {
        name: [
            f
            for c in TRASHNET_CLASSES
            for f in [f for f in files if f.startswith(c + "/")][:limit_per_class]
        ]
        for name, files in parts.items()
    }


def extract(backbone: OnnxBackbone, paths: Sequence[Path], labels: Sequence[int]) -> Examples:
    """Both test-time-augmentation views of every image, in batches."""
    features, logits = [], []
    for start in range(0, len(paths), BATCH_IMAGES):
        views = []
        for path in paths[start : start + BATCH_IMAGES]:
            with Image.open(path) as image:
                views.append(backbone.views(image, tta=True))
        f, lg = backbone.run(np.concatenate(views))
        features.append(f.reshape(len(views), 2, -1))
        logits.append(lg.reshape(len(views), 2, -1))
    return Examples(
        features=np.concatenate(features) if features else np.zeros((0, 2, 1280), np.float32),
        imagenet_logits=np.concatenate(logits) if logits else np.zeros((0, 2, 1000), np.float32),
        labels=np.asarray(labels, dtype=np.int64),
    )


def cached_extract(
    backbone: OnnxBackbone, paths: Sequence[Path], labels: Sequence[int], cache: Path | None
) -> Examples:
    """`extract`, kept in the `cache` file when one is given: train_head and the build scripts
    (services/waste/ml/) share one file per backbone and split (see `feature_cache_file`)."""
    if cache is not None and cache.exists():
        with np.load(cache) as data:
            return Examples(data["features"], data["imagenet_logits"], data["labels"])
    examples = extract(backbone, paths, labels)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(
            cache,
            features=examples.features,
            imagenet_logits=examples.imagenet_logits,
            labels=examples.labels,
        )
    return examples


def feature_cache_file(folder: Path, backbone: OnnxBackbone, part: str, limit: str = "all") -> Path:
    return folder / f"features-{backbone.sha256[:8]}-{part}-{limit}.npz"


def joined(parts: Sequence[Examples]) -> Examples:
    """The same photos seen by several networks: features side by side, the first's logits."""
    return Examples(
        np.concatenate([p.features for p in parts], axis=-1),
        parts[0].imagenet_logits,
        parts[0].labels,
    )


def merged(*parts: Examples) -> Examples:
    """Different photos, one after the other."""
    return Examples(
        np.concatenate([p.features for p in parts]),
        np.concatenate([p.imagenet_logits for p in parts]),
        np.concatenate([p.labels for p in parts]),
    )


def subset(examples: Examples, index: NDArray[np.int64]) -> Examples:
    return Examples(
        examples.features[index], examples.imagenet_logits[index], examples.labels[index]
    )


def centre_view_only(examples: Examples) -> Examples:
    return Examples(examples.features[:, :1], examples.imagenet_logits[:, :1], examples.labels)


def fit_softmax_regression(
    x: NDArray[np.float32], y: NDArray[np.int64], classes: int, l2: float, steps: int = STEPS
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Multinomial logistic regression by full-batch Adam on standardised features; the
    standardisation is folded into the returned weights so the head takes raw features."""
    mean = x.mean(axis=0)
    std = x.std(axis=0) + 1e-6
    z = (x - mean) / std
    onehot = np.eye(classes, dtype=np.float32)[y]
    # Balanced class weights: TrashNet has five times fewer `trash` photos than `paper`.
    counts = np.bincount(y, minlength=classes).astype(np.float32)
    sample_weight = (len(y) / (classes * np.maximum(counts, 1)))[y][:, None]
    w = np.zeros((z.shape[1], classes), np.float32)
    b = np.zeros(classes, np.float32)
    m_w, v_w, m_b, v_b = (np.zeros_like(w), np.zeros_like(w), np.zeros_like(b), np.zeros_like(b))
    lr, beta1, beta2 = 0.05, 0.9, 0.999
    for step in range(1, steps + 1):
        logits = z @ w + b
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(axis=1, keepdims=True)
        grad_logits = sample_weight * (p - onehot) / len(y)
        g_w = z.T @ grad_logits + l2 * w
        g_b = grad_logits.sum(axis=0)
        for param, grad, m, v in ((w, g_w, m_w, v_w), (b, g_b, m_b, v_b)):
            m *= beta1
            m += (1 - beta1) * grad
            v *= beta2
            v += (1 - beta2) * grad * grad
            param -= lr * (m / (1 - beta1**step)) / (np.sqrt(v / (1 - beta2**step)) + 1e-8)
    weights = (w / std[:, None]).astype(np.float32)
    bias = (b - (mean / std) @ w).astype(np.float32)
    return weights, bias


def fit_head(examples: Examples, classes: Sequence[str], l2: float, backbone_sha256: str) -> Head:
    """An uncalibrated head; every view of a photo is a sample of its own (flip augmentation)."""
    x = examples.features.reshape(-1, examples.features.shape[-1])
    y = np.repeat(examples.labels, examples.features.shape[1])
    weights, bias = fit_softmax_regression(x, y, len(classes), l2=l2)
    return Head(
        version="candidate",
        weights=weights,
        bias=bias,
        temperature=1.0,
        threshold=0.0,
        classes=tuple(classes),
        centroids=np.stack([x[y == k].mean(axis=0) for k in range(len(classes))]),
        backbone_sha256=backbone_sha256,
    )


def log_loss(logits: NDArray[np.float32], labels: NDArray[np.int64]) -> float:
    p = softmax(logits)
    return float(-np.log(p[np.arange(len(labels)), labels] + 1e-12).mean())


def l2_row(l2: float, logits: NDArray[np.float32], labels: NDArray[np.int64]) -> dict[str, float]:
    return {
        "l2": l2,
        "top1": round(float((logits.argmax(1) == labels).mean()), 4),
        "log_loss": round(log_loss(logits, labels), 4),
    }


def better(row: dict[str, float], than: dict[str, float]) -> bool:
    """A higher top-1; at equal top-1, a lower log-loss."""
    return (row["top1"], -row["log_loss"]) > (than["top1"], -than["log_loss"])


@dataclass
class OutOfFold:
    """The service's decision on each calibration photo, by a head that never saw the photo."""

    answer: NDArray[np.str_]
    confidence: NDArray[np.float64]
    sure: NDArray[np.bool_]


# Confidences at which a first stage's (sure) answer may stand, lowest first.
ACCEPT_GRID = tuple(float(t) for t in np.round(np.arange(0.50, 1.0, 0.01), 2))
NEVER = 1.01


def first_stage_accept(first: OutOfFold, whole: OutOfFold) -> float:
    """The lowest confidence from which every sure answer of the first stage is the whole
    head's own top answer, out of fold on calibration: the cascade saves the other networks'
    time without changing which category the service names (it may be sure where the whole head
    is not: validation 10.2% not sure against 10.5%). (Equal accuracy was the rule before: on 283
    photos it let first-stage answers stand that traded right for wrong, and validation lost
    three photos to it.)"""
    for threshold in ACCEPT_GRID:
        stands = first.sure & (first.confidence >= threshold)
        if (first.answer[stands] == whole.answer[stands]).all():
            return threshold
    return NEVER


def fit_pooled_head(
    train: Examples,
    calibration: Examples,
    classes: Sequence[str],
    backbone_sha256: str,
    *,
    test_time_augmentation: bool = False,
) -> tuple[Head, dict[str, Any], OutOfFold]:
    """One head on train + calibration photos. Its L2, temperature and thresholds come from
    out-of-fold predictions on the calibration photos only (stratified folds in a fixed order;
    every fold's head also sees all the train photos). Not over the train photos: the networks
    were fine-tuned on them, so their features are over-confident (cross-validating over them
    too chose a not-sure threshold of 0.30)."""
    pool = merged(train, calibration)
    served = calibration if test_time_augmentation else centre_view_only(calibration)
    fold_of = np.full(len(calibration.labels), -1, np.int64)
    for k in range(len(classes)):
        members = np.flatnonzero(calibration.labels == k)
        fold_of[members] = np.arange(len(members)) % CALIBRATION_FOLDS
    trained = np.arange(len(train.labels))
    rows, best = [], None
    for l2 in L2_GRID:
        out_of_fold = np.zeros((len(calibration.labels), len(classes)), np.float32)
        heads = []
        for fold in range(CALIBRATION_FOLDS):
            kept = np.concatenate([trained, len(trained) + np.flatnonzero(fold_of != fold)])
            head = fit_head(subset(pool, kept), classes, l2, backbone_sha256)
            held = np.flatnonzero(fold_of == fold)
            out_of_fold[held] = head.logits(served.features[held].mean(axis=1))
            heads.append(head)
        row = l2_row(l2, out_of_fold, calibration.labels)
        rows.append(row)
        if best is None or better(row, best[0]):
            best = (row, out_of_fold, heads)
    assert best is not None
    row, out_of_fold, heads = best
    temperature = fit_temperature(out_of_fold, calibration.labels)
    decisions = [
        decide(replace(heads[fold_of[i]], temperature=temperature), f, lg)
        for i, (f, lg) in enumerate(zip(served.features, served.imagenet_logits, strict=True))
    ]
    typicality = float(np.percentile([d.typicality for d in decisions], 1))
    codes = [class_code(c) for c in classes]
    confidences = np.array([d.top[1] for d in decisions])
    correct = np.array(
        [d.top[0] == codes[k] for d, k in zip(decisions, calibration.labels, strict=True)]
    )
    threshold = choose_threshold(confidences, correct)
    sure = np.array([sure_under(d, threshold, typicality) for d in decisions])
    head = replace(
        fit_head(pool, classes, row["l2"], backbone_sha256),
        temperature=temperature,
        threshold=threshold,
        typicality_threshold=typicality,
        test_time_augmentation=test_time_augmentation,
    )
    summary = {
        "l2_out_of_fold_on_calibration": rows,
        "l2": row["l2"],
        "out_of_fold_calibration": {
            "images": len(calibration.labels),
            "class_accuracy": row["top1"],
            "not_sure_fraction": round(float(1 - sure.mean()), 4),
            "accuracy_when_sure": round(float(correct[sure].mean()), 4) if sure.any() else None,
        },
    }
    answers = np.array([d.top[0] for d in decisions])
    return head, summary, OutOfFold(answers, confidences, sure)


def fit_temperature(logits: NDArray[np.float32], labels: NDArray[np.int64]) -> float:
    """The temperature minimising the log-loss on held-out logits (a 1-D search)."""
    grid = np.exp(np.linspace(np.log(0.05), np.log(20.0), 400))

    def nll(t: float) -> float:
        z = logits / t
        z = z - z.max(axis=1, keepdims=True)
        log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        return float(-log_p[np.arange(len(labels)), labels].mean())

    return float(min(grid, key=nll))


def choose_threshold(confidences: NDArray[np.float64], correct: NDArray[np.bool_]) -> float:
    """The lowest threshold whose accepted answers are at least TARGET_SURE_ACCURACY right."""
    for threshold in np.round(np.arange(0.30, 0.951, 0.01), 2):
        accepted = confidences >= threshold
        if not accepted.any() or correct[accepted].mean() >= TARGET_SURE_ACCURACY:
            return float(threshold)
    return 0.95


def calibrate(head: Head, calibration: Examples, class_codes: list[str]) -> Head:
    """Temperature, typicality threshold and not-sure threshold, all from calibration photos."""
    if len(calibration.labels) == 0:
        return replace(head, threshold=0.5)
    logits = np.stack([head.logits(f.mean(axis=0)) for f in calibration.features])
    head = replace(head, temperature=fit_temperature(logits, calibration.labels))
    pairs = list(zip(calibration.features, calibration.imagenet_logits, strict=True))
    # Typicality: the 1st percentile of calibration photos, so 99% of real photos pass.
    typicality = [decide(head, f, lg).typicality for f, lg in pairs]
    head = replace(head, typicality_threshold=float(np.percentile(typicality, 1)))
    decisions = [decide(head, f, lg) for f, lg in pairs]
    confidences = np.array([d.top[1] for d in decisions])
    expected = [class_codes[k] for k in calibration.labels]
    correct = np.array([d.top[0] == e for d, e in zip(decisions, expected, strict=True)])
    return replace(head, threshold=choose_threshold(confidences, correct))


def evaluate(
    head: Head, examples: Examples, class_codes: list[str], *, cascade: bool = False
) -> dict[str, Any]:
    """Class-level accuracy, then the service's whole decision (category codes, ImageNet
    mixture, not-sure rule; with `cascade`, the head's first stage answering where it may)."""
    if len(examples.labels) == 0:
        return {"images": 0}
    split = (head.first_stage or head).weights.shape[0]
    decided = [
        answer(head, f[:, :split], lg, partial(_columns_from, f, split), cascade=cascade)
        for f, lg in zip(examples.features, examples.imagenet_logits, strict=True)
    ]
    decisions = [decision for decision, _ in decided]
    sure = np.array([is_sure(decision, by) for decision, by in decided])
    predicted = np.array(
        [
            head.classes.index(max(d.head_probabilities, key=d.head_probabilities.__getitem__))
            for d in decisions
        ]
    )
    expected = [class_codes[i] for i in examples.labels]
    category_right = np.array([d.top[0] == e for d, e in zip(decisions, expected, strict=True)])
    figures = {
        "images": len(examples.labels),
        "class_accuracy": round(float((predicted == examples.labels).mean()), 4),
        "category_accuracy": round(float(category_right.mean()), 4),
        "not_sure_fraction": round(float(1 - sure.mean()), 4),
        "accuracy_when_sure": round(float(category_right[sure].mean()), 4) if sure.any() else None,
        "imagenet_category_answers": int(sum(d.top[0] not in class_codes for d in decisions)),
    }
    if cascade:
        figures["all_networks_fraction"] = round(
            float(np.mean([by is head for _, by in decided])), 4
        )
    return figures


def _columns_from(features: NDArray[np.float32], start: int) -> NDArray[np.float32]:
    return features[:, start:]


def train_head(
    extra_examples: Sequence[tuple[Path, str]] = (),
    *,
    models_dir: Path | None = None,
    heads_dir: Path | None = None,
    photos: Path | None = None,
    limit_per_class: int | None = None,
    feature_cache: Path | None = None,
    test_time_augmentation: bool = False,
    publish: bool = True,
    out_path: Path | None = None,
    allow_worse: bool = False,
    log: Log = print,
) -> Path:
    """Train, calibrate and write a new head; `extra_examples` are stored corrections
    (image path, category code). Returns the new head file, which `current` then names.
    Raises HeadNotBetter, publishing nothing, when the new head does worse on the validation
    photos than the current one in `heads_dir` (unless `allow_worse`)."""
    models_dir = models_dir or MODELS_DIR
    heads_dir = heads_dir or models_dir / "heads"
    photos = photos or photos_dir()
    backbones = Backbones(models_dir, intra_op_threads=os.cpu_count() or 1)
    split = load_split(limit_per_class)

    classes = list(TRASHNET_CLASSES)
    extra_paths, extra_labels = _corrections_as_classes(extra_examples, classes, log)

    def shared(name: str) -> list[Examples]:
        """The split's features, one Examples per network."""
        files = split[name]
        labels = [classes.index(f.split("/")[0]) for f in files]
        parts = []
        for member in backbones.members:
            cache = None
            if feature_cache is not None:
                limit = str(limit_per_class or "all")
                cache = feature_cache_file(feature_cache, member, name, limit)
            parts.append(cached_extract(member, [photos / f for f in files], labels, cache))
        return parts

    train, calibration = shared("train"), shared("calibration")
    validation = joined(shared("validation"))
    corrections = [extract(m, extra_paths, extra_labels) for m in backbones.members]
    log(
        f"features: {len(train[0].labels)} train, {len(corrections[0].labels)} corrections, "
        f"{len(calibration[0].labels)} calibration, {len(validation.labels)} validation photos"
    )
    # The whole head reads every network; the first stage only the first network, and its
    # sure answers stand where calibration found them to be the whole head's (the cascade).
    head, fitting, whole = fit_pooled_head(
        merged(joined(train), joined(corrections)),
        joined(calibration),
        classes,
        backbones.sha256,
        test_time_augmentation=test_time_augmentation,
    )
    first, first_fitting, alone = fit_pooled_head(
        merged(train[0], corrections[0]),
        calibration[0],
        classes,
        backbones.members[0].sha256,
        test_time_augmentation=test_time_augmentation,
    )
    accept = first_stage_accept(alone, whole)
    head = replace(head, first_stage=first, first_stage_accept=accept)
    all_views = validation
    # Scored on exactly the views the service will compute.
    if not test_time_augmentation:
        validation = centre_view_only(validation)
    class_codes = [class_code(c) for c in classes]
    metrics = {
        "trainer": "numpy softmax regression (ecosort_waste.classifier.training)",
        "backbones": backbones.version,
        "test_time_augmentation": test_time_augmentation,
        "temperature": round(head.temperature, 4),
        "threshold": head.threshold,
        "typicality_threshold": round(head.typicality_threshold, 4),
        "train_images": len(train[0].labels),
        "corrections": len(corrections[0].labels),
        **fitting,
        "first_stage": {
            **first_fitting,
            "temperature": round(first.temperature, 4),
            "threshold": first.threshold,
            "accept": accept,
        },
        "validation": evaluate(head, validation, class_codes),
        "validation_cascade": evaluate(head, validation, class_codes, cascade=True),
    }
    head = replace(head, metrics=metrics)
    log(f"L2 {fitting['l2']}, temperature {head.temperature:.3f}, not-sure {head.threshold:.2f}")
    log(f"first stage: L2 {first_fitting['l2']}, its sure answers stand from {accept:.2f}")
    log(f"validation: {json.dumps(metrics['validation'])}")
    log(f"validation, cascade: {json.dumps(metrics['validation_cascade'])}")
    if out_path is not None:
        save_head(head, out_path)
        return out_path
    if not publish:
        raise ValueError("publish=False needs out_path")
    if not allow_worse:
        _refuse_if_worse(metrics["validation"], heads_dir, backbones, all_views, log)
    path = publish_head(head, heads_dir)
    log(f"wrote {path} and pointed {heads_dir / 'current'} at it")
    return path


def _refuse_if_worse(
    figures: dict[str, Any],
    heads_dir: Path,
    backbones: Backbones,
    validation: Examples,
    log: Log,
) -> None:
    """HeadNotBetter when the current head of `heads_dir` answers the same validation photos
    (both views: `validation`) better than `figures` say the new head does. A current head
    that cannot be read or was made for other network files is nothing to compare with (the
    service will not run it either)."""
    try:
        current = load_head(current_head_path(heads_dir))
    except HeadError:
        return
    if current.backbone_sha256 != backbones.sha256 or "category_accuracy" not in figures:
        return
    served = validation if current.test_time_augmentation else centre_view_only(validation)
    theirs = evaluate(current, served, [class_code(c) for c in current.classes])
    log(f"validation, current {current.version}: {json.dumps(theirs)}")
    if figures["category_accuracy"] < theirs["category_accuracy"] - WORSE_TOLERANCE:
        raise HeadNotBetter(
            f"not published: validation category accuracy {figures['category_accuracy']} "
            f"against {theirs['category_accuracy']} for the current {current.version} on the "
            "same photos"
        )


def _corrections_as_classes(
    extra_examples: Sequence[tuple[Path, str]], classes: list[str], log: Log
) -> tuple[list[Path], list[int]]:
    """Map corrections onto head classes, adding a class per new category code that has
    enough photos; `classes` is extended in place."""
    by_class: dict[str, list[Path]] = {}
    for path, code in extra_examples:
        if code not in CATEGORY_CODES:
            log(f"skipping correction {path}: unknown category {code!r}")
            continue
        by_class.setdefault(CODE_TO_TRASHNET.get(code, code), []).append(Path(path))
    paths: list[Path] = []
    labels: list[int] = []
    for name, items in sorted(by_class.items()):
        if name not in classes:
            if len(items) < MIN_NEW_CLASS_EXAMPLES:
                log(
                    f"skipping {len(items)} correction(s) to {name}: a new class needs "
                    f"{MIN_NEW_CLASS_EXAMPLES}"
                )
                continue
            classes.append(name)
        paths += items
        labels += [classes.index(name)] * len(items)
    return paths, labels
