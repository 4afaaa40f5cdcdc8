"""Round 2: fine-tune the last MBConv blocks (8-15), the head convolution and a 6-class layer
end to end on freshly augmented photos (training split only), with learning without forgetting
on the ImageNet classifier so one network still serves both outputs.

- Stem and blocks 0-7 stay frozen and run in onnxruntime (several times faster than eager
  torch on this CPU); every epoch draws new random views of every photo (buildlib.augmented_view).
- Batch norm keeps its ImageNet running statistics (eval mode): batches are small.
- The ImageNet logits of the tuned network are pulled towards those of the original network on
  the same views (KL, temperature 2), so `imagenet_logits` can come from the tuned blocks and
  the exported file is not a second copy of the tail (size budget ~21 MB).
- Each epoch is scored on the calibration split (centre crop); the best calibration log-loss
  is kept in /work/ml-work/blocks-best.pt.
- `--init` continues from an earlier checkpoint (the teacher stays the original network);
  `--crop-min` sets the smallest random crop (share of the photo's area).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import random
import time

import numpy as np
import onnxruntime as ort
import torch
from buildlib import (
    INPUT_SIZES,
    PHOTOS_DIR,
    TRASHNET_CLASSES,
    WORK_DIR,
    augmented_view,
    label_of,
    load_backbone,
    load_split,
    preprocess,
    set_threads,
)
from PIL import Image
from torch import nn
from torch.nn import functional as F

FIRST_TRAINED_BLOCK = 8  # default; blocks before it stay frozen
DISTILL_TEMPERATURE = 2.0


class FrozenStem(nn.Module):
    """Stem and the frozen blocks, exported once to ONNX for speed."""

    def __init__(self, backbone: nn.Module, first_trained: int = FIRST_TRAINED_BLOCK) -> None:
        super().__init__()
        self.backbone = backbone
        self.first_trained = first_trained

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self.backbone
        x = b._swish(b._bn0(b._conv_stem(x)))
        for block in b._blocks[: self.first_trained]:
            x = block(x)
        return x


class TunedTop(nn.Module):
    """Blocks 8-15, head convolution, ImageNet classifier and the TrashNet layer."""

    def __init__(
        self, backbone: nn.Module, dropout: float, first_trained: int = FIRST_TRAINED_BLOCK
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(copy.deepcopy(list(backbone._blocks[first_trained:])))
        self.conv_head = copy.deepcopy(backbone._conv_head)
        self.bn1 = copy.deepcopy(backbone._bn1)
        self.imagenet_fc = copy.deepcopy(backbone._fc)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(1280, len(TRASHNET_CLASSES))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return F.relu6(self.bn1(self.conv_head(x))).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled = self.features(x)
        return self.fc(self.dropout(pooled)), self.imagenet_fc(pooled)


def stem_session(
    backbone: nn.Module, first_trained: int, arch: str = "lite0"
) -> ort.InferenceSession:
    suffix = "" if arch == "lite0" else f"-{arch}"
    path = WORK_DIR / f"stem-to-block{first_trained}{suffix}.onnx"
    for p in backbone.parameters():
        p.requires_grad_(False)
    size = INPUT_SIZES[arch]
    example = torch.zeros(1, 3, size, size)
    torch.onnx.export(
        FrozenStem(backbone, first_trained).eval(),
        (example,),
        str(path),
        input_names=["image"],
        output_names=["x"],
        dynamic_axes={"image": {0: "batch"}, "x": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def load_photos(files: list[str]) -> list[Image.Image]:
    photos = []
    for relpath in files:
        with Image.open(PHOTOS_DIR / relpath) as raw:
            # Decoded now: to_rgb returns an RGB photo itself, still lazy, and the file closes.
            raw.load()
            photos.append(preprocess.to_rgb(raw))
    return photos


def calibration_inputs(
    stem: ort.InferenceSession, photos: list[Image.Image], size: int = 224
) -> torch.Tensor:
    """Centre crops through the frozen stem, computed once."""
    arrays = [preprocess.normalize(preprocess.center_square(p, size)) for p in photos]
    out = [
        stem.run(None, {"image": np.stack(arrays[i : i + 32])})[0]
        for i in range(0, len(arrays), 32)
    ]
    return torch.from_numpy(np.concatenate(out))


def score(model: TunedTop, inputs: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    model.eval()
    with torch.inference_mode():
        logits = torch.cat([model(chunk)[0] for chunk in inputs.split(64)])
    return {
        "calibration_loss": float(F.cross_entropy(logits, labels)),
        "calibration_accuracy": float((logits.argmax(1) == labels).float().mean()),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--arch", choices=sorted(INPUT_SIZES), default="lite0")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--first-block", type=int, default=FIRST_TRAINED_BLOCK)
    parser.add_argument("--lr", type=float, default=3e-4, help="tuned blocks; the new layer x10")
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--dropout", type=float, default=0.2)
    parser.add_argument("--label-smoothing", type=float, default=0.1)
    parser.add_argument("--distill-weight", type=float, default=1.0)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--limit", type=int, default=0, help="train photos (smoke runs)")
    parser.add_argument("--out", default="blocks-best.pt")
    parser.add_argument(
        "--init", default="", help="checkpoint to continue from (round 3: round 2's best)"
    )
    parser.add_argument("--crop-min", type=float, default=0.45, help="smallest crop area share")
    parser.add_argument(
        "--early-lr-factor",
        type=float,
        default=1.0,
        help="lr multiplier for tuned blocks before --early-until (1.0: one lr for all)",
    )
    parser.add_argument(
        "--early-until", type=int, default=8, help="first block index NOT scaled by the factor"
    )
    parser.add_argument(
        "--progress", type=int, default=0, help="print timing every N batches (0: off)"
    )
    args = parser.parse_args()
    set_threads()
    torch.manual_seed(0)
    rng = random.Random(0)

    backbone = load_backbone(args.arch)
    size = INPUT_SIZES[args.arch]  # each backbone at its native resolution
    stem = stem_session(backbone, args.first_block, args.arch)
    split = load_split()
    train_files = split["train"]
    if args.limit:
        train_files = train_files[:: max(1, len(train_files) // args.limit)]
    train_photos = load_photos(train_files)
    train_labels = [label_of(f) for f in train_files]
    cal_inputs = calibration_inputs(stem, load_photos(split["calibration"]), size)
    cal_labels = torch.tensor([label_of(f) for f in split["calibration"]])

    model = TunedTop(backbone, args.dropout, args.first_block)
    teacher = TunedTop(backbone, 0.0, args.first_block).eval()  # always the ImageNet original
    if args.init:
        # Continue from an earlier run; the teacher stays the original network.
        model.load_state_dict(torch.load(WORK_DIR / args.init, map_location="cpu")["state"])
    for p in model.parameters():
        p.requires_grad_(True)
    new_layer = list(model.fc.parameters())

    def is_early(name: str) -> bool:
        # model.blocks[i] is backbone block first_block + i
        if args.early_lr_factor == 1.0 or not name.startswith("blocks."):
            return False
        return args.first_block + int(name.split(".")[1]) < args.early_until

    pretrained = [
        p for n, p in model.named_parameters() if not n.startswith("fc.") and not is_early(n)
    ]
    early = [p for n, p in model.named_parameters() if is_early(n)]
    groups = [{"params": pretrained, "lr": args.lr}, {"params": new_layer, "lr": args.lr * 10}]
    if early:
        groups.append({"params": early, "lr": args.lr * args.early_lr_factor})
    optimizer = torch.optim.AdamW(groups, weight_decay=args.weight_decay)
    steps_per_epoch = math.ceil(len(train_photos) / args.batch)
    total_steps = args.epochs * steps_per_epoch
    warmup = steps_per_epoch // 2

    def lr_factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total_steps - warmup)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    history, best = [], None
    print(json.dumps({"start": score(model, cal_inputs, cal_labels)}), flush=True)
    for epoch in range(args.epochs):
        started = time.monotonic()
        model.eval()  # frozen batch-norm statistics, no drop-connect...
        model.dropout.train()  # ...but dropout before the new layer
        order = list(range(len(train_photos)))
        rng.shuffle(order)
        totals = {"ce": 0.0, "distill": 0.0}
        for start in range(0, len(order), args.batch):
            idx = order[start : start + args.batch]
            views = [
                preprocess.normalize(augmented_view(train_photos[i], rng, args.crop_min, size))
                for i in idx
            ]
            x = torch.from_numpy(stem.run(None, {"image": np.stack(views)})[0])
            y = torch.tensor([train_labels[i] for i in idx])
            with torch.no_grad():
                teacher_logits = teacher(x)[1]
            logits, imagenet_logits = model(x)
            ce = F.cross_entropy(logits, y, label_smoothing=args.label_smoothing)
            t = DISTILL_TEMPERATURE
            distill = F.kl_div(
                F.log_softmax(imagenet_logits / t, 1),
                F.log_softmax(teacher_logits / t, 1),
                log_target=True,
                reduction="batchmean",
            ) * (t * t)
            loss = ce + args.distill_weight * distill
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            totals["ce"] += ce.item() * len(idx)
            totals["distill"] += distill.item() * len(idx)
            batch_no = start // args.batch + 1
            if args.progress and batch_no % args.progress == 0:
                print(
                    json.dumps(
                        {
                            "epoch": epoch + 1,
                            "batch": batch_no,
                            "of": steps_per_epoch,
                            "seconds": round(time.monotonic() - started, 1),
                        }
                    ),
                    flush=True,
                )
        row = {
            "epoch": epoch + 1,
            "train_ce": totals["ce"] / len(order),
            "train_distill": totals["distill"] / len(order),
            **score(model, cal_inputs, cal_labels),
            "seconds": round(time.monotonic() - started),
        }
        history.append(row)
        print(json.dumps(row), flush=True)
        if best is None or row["calibration_loss"] < best["calibration_loss"]:
            best = row
            torch.save(
                {"state": model.state_dict(), "args": vars(args), "epoch": row},
                WORK_DIR / args.out,
            )
    (WORK_DIR / f"{args.out}.history.json").write_text(
        json.dumps({"args": vars(args), "history": history, "best": best}, indent=1)
    )
    print("best", json.dumps(best), flush=True)


if __name__ == "__main__":
    main()
