"""The model input the pipeline hands the local classifier: `normalize` is a table look-up for
speed, and must stay bit-for-bit the arithmetic the model was trained and calibrated with."""

from __future__ import annotations

import io

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from ecosort_waste.classifier import preprocess

from .conftest import photo_bytes


def arithmetic(image: Image.Image) -> NDArray[np.float32]:
    pixels = np.asarray(image, dtype=np.float32) / 255.0
    chw = ((pixels - preprocess.MEAN_RGB) / preprocess.STD_RGB).transpose(2, 0, 1)
    return np.ascontiguousarray(chw, dtype=np.float32)


def test_every_byte_value_of_every_channel_is_normalised_exactly() -> None:
    values = np.arange(256, dtype=np.uint8)
    # Row r, column c holds (r, c, (r + c) % 256): each channel sees every value.
    rows, cols = np.meshgrid(values, values, indexing="ij")
    image = Image.fromarray(np.stack([rows, cols, rows + cols], axis=-1), "RGB")

    normalized = preprocess.normalize(image)

    assert normalized.dtype == np.float32 and normalized.flags.c_contiguous
    assert np.array_equal(normalized, arithmetic(image))


def test_a_photo_gives_the_same_model_input_as_the_arithmetic() -> None:
    square = preprocess.center_square(Image.open(io.BytesIO(photo_bytes())), 224)

    assert np.array_equal(preprocess.normalize(square), arithmetic(square))
