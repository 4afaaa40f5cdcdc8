"""Cache the frozen trunk's activations (input of block 15, 192x7x7, float16) under
/work/ml-work so fine-tuning never recomputes the first 15 blocks.

views.npz per split: `acts` (N, 192, 7, 7), `labels` (N,), `image` (N,) index into the split list,
`kind` (N,) 0 = centre crop, 1 = mirrored centre crop, 2 = random augmented view.
"""

from __future__ import annotations

import argparse
import random
import time

import numpy as np
import onnxruntime as ort
import torch
from buildlib import (
    PHOTOS_DIR,
    WORK_DIR,
    as_batch,
    augmented_view,
    label_of,
    load_backbone,
    load_split,
    preprocess,
    set_threads,
    trunk,
)
from PIL import Image

BATCH = 32


def views_of(relpath: str, n_aug: int, rng: random.Random) -> list[tuple[int, np.ndarray]]:
    with Image.open(PHOTOS_DIR / relpath) as raw:
        image = raw.convert("RGB")
    views = [(0, preprocess.model_input(image)), (1, preprocess.model_input(image, flip=True))]
    views += [(2, preprocess.normalize(augmented_view(image, rng))) for _ in range(n_aug)]
    return views


class Trunk(torch.nn.Module):
    def __init__(self, backbone: torch.nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return trunk(self.backbone, x)


def trunk_session(backbone: torch.nn.Module) -> ort.InferenceSession:
    """onnxruntime runs the frozen trunk several times faster than eager torch on this CPU."""
    path = WORK_DIR / "trunk.onnx"
    example = torch.zeros(1, 3, preprocess.INPUT_SIZE, preprocess.INPUT_SIZE)
    torch.onnx.export(
        Trunk(backbone).eval(),
        (example,),
        str(path),
        input_names=["image"],
        output_names=["trunk"],
        dynamic_axes={"image": {0: "batch"}, "trunk": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    with torch.inference_mode():
        expected = trunk(backbone, example).numpy()
    got = session.run(None, {"image": example.numpy()})[0]
    assert np.abs(expected - got).max() < 1e-3, "ONNX trunk differs from torch"
    return session


def cache_split(model: ort.InferenceSession, name: str, files: list[str], n_aug: int) -> None:
    rng = random.Random(f"{name}-{n_aug}")
    acts, labels, images, kinds = [], [], [], []
    pending: list[np.ndarray] = []
    started = time.monotonic()

    def flush() -> None:
        if pending:
            batch = as_batch(pending).numpy()
            acts.append(model.run(None, {"image": batch})[0].astype(np.float16))
            pending.clear()

    for index, relpath in enumerate(files):
        for kind, array in views_of(relpath, n_aug, rng):
            pending.append(array)
            labels.append(label_of(relpath))
            images.append(index)
            kinds.append(kind)
            if len(pending) == BATCH:
                flush()
        if index % 100 == 0:
            print(
                f"{name}: {index}/{len(files)} images, {time.monotonic() - started:.0f}s",
                flush=True,
            )
    flush()
    np.savez(
        WORK_DIR / f"views-{name}.npz",
        acts=np.concatenate(acts),
        labels=np.array(labels, dtype=np.int64),
        image=np.array(images, dtype=np.int64),
        kind=np.array(kinds, dtype=np.int8),
    )
    print(f"{name}: done, {len(labels)} views in {time.monotonic() - started:.0f}s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--augmented-views", type=int, default=6)
    args = parser.parse_args()
    set_threads()
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    model = trunk_session(load_backbone())
    split = load_split()
    # Calibration and validation: only the views the runtime sees (the tail trains on train only).
    cache_split(model, "calibration", split["calibration"], 0)
    cache_split(model, "train", split["train"], args.augmented_views)
    # The reported validation figure comes from the exported ONNX model, not from this cache.
    cache_split(model, "validation", split["validation"], 0)


if __name__ == "__main__":
    main()
