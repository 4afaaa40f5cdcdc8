"""Export Lite0 to ONNX with two outputs and check it against torch.

- `features` (N, 1280): pooled output of the head convolution, what the numpy head reads;
- `imagenet_logits` (N, 1000): the original ImageNet classifier on the same pooled features,
  for the categories TrashNet lacks (imagenet_map.py).
One network: the frozen stem and blocks 0-7, then blocks 8-15 and the head convolution as
fine-tuned by finetune_blocks.py (which kept the ImageNet outputs close to the original's by
distillation). `--no-finetune` exports the original weights. The ImageNet top-1 agreement with
the original network on calibration photos is reported.
Input `image` (N, 3, S, S), normalised as in ecosort_waste.classifier.preprocess; S is the
backbone's native size (224 Lite0, 240 Lite1, 260 Lite2; the checkpoint's `--arch`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from buildlib import (
    INPUT_SIZES,
    PHOTOS_DIR,
    WORK_DIR,
    load_backbone,
    load_split,
    preprocess,
    set_threads,
)
from finetune_blocks import FIRST_TRAINED_BLOCK, FrozenStem, TunedTop
from PIL import Image
from torch import nn

ONNX_NAME = "efficientnet-lite0-ft.onnx"


class DualOutput(nn.Module):
    def __init__(self, backbone: nn.Module, tuned: TunedTop, first_trained: int) -> None:
        super().__init__()
        self.stem = FrozenStem(backbone, first_trained)
        self.tuned = tuned

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled = self.tuned.features(self.stem(image))
        return pooled, self.tuned.imagenet_fc(pooled)


def sample_images(count: int, part: str = "validation", size: int = 224) -> np.ndarray:
    split = load_split()[part]
    picks = split[:: max(1, len(split) // count)][:count]
    arrays = []
    for relpath in picks:
        with Image.open(PHOTOS_DIR / relpath) as image:
            arrays.append(preprocess.normalize(preprocess.center_square(image, size)))
    return np.stack(arrays)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tuned", type=Path, default=WORK_DIR / "blocks-best.pt")
    parser.add_argument(
        "--no-finetune", action="store_true", help="features from the ImageNet tail"
    )
    parser.add_argument(
        "--arch", default="lite0", help="with --no-finetune (else the checkpoint's)"
    )
    parser.add_argument("--out", type=Path, default=WORK_DIR / ONNX_NAME)
    args = parser.parse_args()
    set_threads()
    checkpoint = None
    arch = args.arch
    if not args.no_finetune:
        checkpoint = torch.load(args.tuned, map_location="cpu")
        arch = checkpoint["args"].get("arch", "lite0")
    size = INPUT_SIZES[arch]
    backbone = load_backbone(arch)
    for p in backbone.parameters():
        p.requires_grad_(False)  # tracing needs constants
    original = DualOutput(backbone, TunedTop(backbone, 0.0), FIRST_TRAINED_BLOCK).eval()
    first_trained = FIRST_TRAINED_BLOCK
    if checkpoint is not None:
        first_trained = checkpoint["args"].get("first_block", FIRST_TRAINED_BLOCK)
    tuned = TunedTop(backbone, 0.0, first_trained)
    if checkpoint is not None:
        tuned.load_state_dict(checkpoint["state"])
    for p in tuned.parameters():
        p.requires_grad_(False)
    model = DualOutput(backbone, tuned.eval(), first_trained).eval()

    example = torch.from_numpy(sample_images(8, size=size))
    torch.onnx.export(
        model,
        (example[:1],),
        str(args.out),
        input_names=["image"],
        output_names=["features", "imagenet_logits"],
        dynamic_axes={
            "image": {0: "batch"},
            "features": {0: "batch"},
            "imagenet_logits": {0: "batch"},
        },
        opset_version=17,
        dynamo=False,
    )
    onnx.checker.check_model(onnx.load(str(args.out)))

    with torch.inference_mode():
        torch_features, torch_logits = (t.numpy() for t in model(example))
        calibration = torch.from_numpy(sample_images(96, "calibration", size))
        tuned_top1 = model(calibration)[1].argmax(1)
        original_top1 = original(calibration)[1].argmax(1)
    session = ort.InferenceSession(str(args.out), providers=["CPUExecutionProvider"])
    onnx_features, onnx_logits = session.run(None, {"image": example.numpy()})
    report = {
        "onnx": args.out.name,
        "sha256": hashlib.sha256(args.out.read_bytes()).hexdigest(),
        "bytes": args.out.stat().st_size,
        "fine_tuned": not args.no_finetune,
        "arch": arch,
        "input_size": size,
        "tuned_from_block": first_trained,
        "checkpoint_epoch": checkpoint["epoch"] if checkpoint is not None else None,
        "imagenet_top1_agreement_with_original_96_calibration_photos": float(
            (tuned_top1 == original_top1).float().mean()
        ),
        "max_abs_diff_features": float(np.abs(torch_features - onnx_features).max()),
        "max_abs_diff_imagenet_logits": float(np.abs(torch_logits - onnx_logits).max()),
        "same_imagenet_top1": bool((torch_logits.argmax(1) == onnx_logits.argmax(1)).all()),
        "torch": torch.__version__,
        "onnx_version": onnx.__version__,
        "onnxruntime": ort.__version__,
    }
    print(json.dumps(report, indent=1))
    # Build-time proof that the ONNX graph computes what torch computes.
    assert report["max_abs_diff_features"] < 1e-3, report
    assert report["max_abs_diff_imagenet_logits"] < 1e-3, report
    assert report["same_imagenet_top1"], report
    (WORK_DIR / f"export-report-{args.out.stem}.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
