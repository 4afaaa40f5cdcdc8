"""Image → model input, shared by the runtime and the build scripts (services/waste/ml/).

The build scripts import this module too, so training and serving see identical pixels.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageOps

# ImageNet statistics: the pretrained Lite0 weights were checked with these (see MODEL_CARD.md).
MEAN_RGB = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD_RGB = np.array([0.229, 0.224, 0.225], dtype=np.float32)
# What `normalize` gives each 8-bit value of each channel: the same float32 operations as on
# a whole image ((value / 255 - mean) / std), done once, so an image is a table look-up with
# bit-for-bit the same result at half the cost.
_BYTE_VALUES = np.arange(256, dtype=np.float32)[None, :]
_NORMALIZED = (_BYTE_VALUES / 255.0 - MEAN_RGB[:, None]) / STD_RGB[:, None]


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB on a white background: transparent PNGs must not turn black (TrashNet is on white)."""
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    # Callers only read the result: an RGB image needs no copy (a photo's worth per network).
    return image if image.mode == "RGB" else image.convert("RGB")


def center_square(image: Image.Image, size: int) -> Image.Image:
    """Resize the short side to `size`, then crop the centre square."""
    rgb = to_rgb(image)
    return ImageOps.fit(rgb, (size, size), method=Image.Resampling.BILINEAR)


def normalize(image: Image.Image) -> NDArray[np.float32]:
    """A size×size RGB image → CHW float32, normalised with the ImageNet statistics."""
    chw = np.asarray(image).transpose(2, 0, 1)
    normalized = np.empty(chw.shape, dtype=np.float32)
    for channel in range(3):
        np.take(_NORMALIZED[channel], chw[channel], out=normalized[channel])
    return normalized


def model_input(image: Image.Image, size: int, *, flip: bool = False) -> NDArray[np.float32]:
    """One CHW array for the ONNX model (`size`: its input side, OnnxBackbone.input_size);
    `flip` gives the mirrored view used for test-time augmentation."""
    square = center_square(image, size)
    if flip:
        square = square.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return normalize(square)


def tta_batch(image: Image.Image, size: int) -> NDArray[np.float32]:
    """The two views the classifier averages: the centre crop and its mirror image."""
    square = center_square(image, size)
    mirrored = square.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return np.stack([normalize(square), normalize(mirrored)])
