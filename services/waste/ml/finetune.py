"""Fine-tune the backbone's 1x1 head convolution (320→1280, with its batch norm) and a 6-class
linear layer on cached activations (cache_activations.py), training split only.

Block 15 stays frozen and is run once here over the cache: on two shared cores, backpropagating
through it as well was measured 2-3x slower per epoch (see MODEL_CARD.md).

Each epoch is scored on the calibration split (centre + mirrored view averaged, as at run time);
the epoch with the best calibration log-loss is kept: /work/ml-work/tail-best.pt.
"""

from __future__ import annotations

import argparse
import copy
import json
import time

import numpy as np
import onnxruntime as ort
import torch
from buildlib import FIRST_TUNED_BLOCK, TRASHNET_CLASSES, WORK_DIR, load_backbone, set_threads
from torch import nn


class TunedTail(nn.Module):
    """A fine-tuned copy of the head convolution with the TrashNet classifier on top; its input
    is the (frozen) output of the last block, 320x7x7."""

    def __init__(self, backbone: nn.Module, dropout: float) -> None:
        super().__init__()
        self.conv_head = copy.deepcopy(backbone._conv_head)
        self.bn1 = copy.deepcopy(backbone._bn1)
        self.act = nn.ReLU6()
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(1280, len(TRASHNET_CLASSES))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.bn1(self.conv_head(x)))
        return x.mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(self.features(x)))

    def freeze_batchnorm(self) -> None:
        # Batches of cached activations are small and correlated: keep ImageNet running stats.
        for module in self.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.eval()


def last_block_session(last_block: nn.Module) -> ort.InferenceSession:
    """The frozen last block as ONNX: onnxruntime runs it several times faster than torch here."""
    path = WORK_DIR / "block15.onnx"
    example = torch.zeros(1, 192, 7, 7)
    torch.onnx.export(
        last_block.eval(),
        (example,),
        str(path),
        input_names=["x"],
        output_names=["y"],
        dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def load_views(name: str, last_block: ort.InferenceSession) -> dict[str, np.ndarray]:
    """Cached trunk activations pushed through the frozen last block once (float16)."""
    with np.load(WORK_DIR / f"views-{name}.npz") as data:
        views = {k: data[k] for k in data.files}
    acts = views.pop("acts")
    outputs = [
        last_block.run(None, {"x": acts[i : i + 256].astype(np.float32)})[0].astype(np.float16)
        for i in range(0, len(acts), 256)
    ]
    views["acts"] = np.concatenate(outputs)
    return views


def tta_logits(model: TunedTail, views: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Mean logits over the centre and mirrored views, one row per image."""
    model.eval()
    keep = views["kind"] < 2
    acts = torch.from_numpy(views["acts"][keep].astype(np.float32))
    with torch.inference_mode():
        logits = torch.cat([model(chunk) for chunk in acts.split(256)]).numpy()
    images = views["image"][keep]
    n = images.max() + 1
    mean = np.zeros((n, logits.shape[1]), np.float32)
    np.add.at(mean, images, logits)
    mean /= np.bincount(images, minlength=n)[:, None]
    labels = np.zeros(n, np.int64)
    labels[images] = views["labels"][keep]
    return mean, labels


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--tail-lr-scale", type=float, default=0.15)
    parser.add_argument("--weight-decay", type=float, default=0.05)
    parser.add_argument("--dropout", type=float, default=0.3)
    parser.add_argument("--label-smoothing", type=float, default=0.1)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument(
        "--subsample", type=float, default=0.5, help="share of the cached views drawn per epoch"
    )
    parser.add_argument("--train-split", default="train", help="calibration: a quick smoke run")
    parser.add_argument("--out", default="tail-best.pt")
    args = parser.parse_args()
    set_threads()
    torch.manual_seed(0)

    backbone = load_backbone()
    last_block = last_block_session(backbone._blocks[FIRST_TUNED_BLOCK])
    started = time.monotonic()
    train = load_views(args.train_split, last_block)
    calibration = load_views("calibration", last_block)
    print(f"block 15 over the cache: {time.monotonic() - started:.0f}s", flush=True)
    model = TunedTail(backbone, args.dropout)
    tail_params = [p for n, p in model.named_parameters() if not n.startswith("fc.")]
    optimizer = torch.optim.AdamW(
        [
            {"params": tail_params, "lr": args.lr * args.tail_lr_scale},
            {"params": model.fc.parameters(), "lr": args.lr},
        ],
        weight_decay=args.weight_decay,
    )
    per_epoch = int(len(train["labels"]) * args.subsample)
    steps_per_epoch = -(-per_epoch // args.batch)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=[args.lr * args.tail_lr_scale, args.lr],
        total_steps=args.epochs * steps_per_epoch,
        pct_start=0.15,
    )
    loss_fn = nn.CrossEntropyLoss(label_smoothing=args.label_smoothing)
    acts = torch.from_numpy(train["acts"])
    labels = torch.from_numpy(train["labels"])
    history, best = [], None
    for epoch in range(args.epochs):
        started = time.monotonic()
        model.train()
        model.freeze_batchnorm()
        order = torch.randperm(len(labels))[:per_epoch]
        total = 0.0
        for start in range(0, len(order), args.batch):
            idx = order[start : start + args.batch]
            loss = loss_fn(model(acts[idx].float()), labels[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            total += loss.item() * len(idx)
        total /= len(order)
        cal_logits, cal_labels = tta_logits(model, calibration)
        log_probs = torch.log_softmax(torch.from_numpy(cal_logits), 1).numpy()
        cal_loss = float(-log_probs[np.arange(len(cal_labels)), cal_labels].mean())
        cal_acc = float((cal_logits.argmax(1) == cal_labels).mean())
        row = {
            "epoch": epoch + 1,
            "train_loss": total,
            "calibration_loss": cal_loss,
            "calibration_accuracy": cal_acc,
            "seconds": time.monotonic() - started,
        }
        history.append(row)
        print(json.dumps(row), flush=True)
        if best is None or cal_loss < best["calibration_loss"]:
            best = row
            torch.save(
                {"state": model.state_dict(), "args": vars(args), "epoch": row},
                WORK_DIR / args.out,
            )
    (WORK_DIR / "finetune-history.json").write_text(
        json.dumps({"args": vars(args), "history": history, "best": best}, indent=1)
    )
    print("best", json.dumps(best))


if __name__ == "__main__":
    main()
