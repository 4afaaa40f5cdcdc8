"""Quantize the exported ONNX network to int8: what the service runs.

Static quantization (QDQ, weights int8 per channel, activations uint8; the stem stays fp32)
calibrated on train photos only, so the calibration and validation splits stay unseen. On CPUs
with AVX-512 VNNI, onnxruntime's int8 convolutions take about half the time of fp32. On an
AVX2-only CPU they took about three quarters of it with onnxruntime's default kernels, which
saturate there and change the answers; with the non-saturating ones the service uses there, about
as long as fp32 (MODEL_CARD.md; ml/README.md, round 9). The head is retrained on the int8
features afterwards (`make train-head`), so it learns the features the service really computes.

`--input-size` sets the side of the square the service feeds the network (the file's input
shape, which the service reads; default 224, the fine-tuning size). The network is convolutions
and a global average, so it runs at any size: 256 px was tried (MODEL_CARD.md, round 5).

Reports, on calibration photos: the cosine between fp32 and int8 features, the ImageNet top-1
agreement, and the CPU time per photo of both files (one thread, batch 1).
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from buildlib import MODELS_DIR, PHOTOS_DIR, WORK_DIR, load_split, onnx_options, preprocess
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process
from PIL import Image

SOURCE = WORK_DIR / "efficientnet-lite0-ft.onnx"  # export_onnx.py writes it
TARGET = MODELS_DIR / "efficientnet-lite0-ft-int8.onnx"
METHODS = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile}


def photo_input(relpath: str, size: int) -> np.ndarray:
    with Image.open(PHOTOS_DIR / relpath) as image:
        return preprocess.normalize(preprocess.center_square(image, size))[None]


class TrainPhotos(CalibrationDataReader):
    def __init__(self, photos: list[str], size: int) -> None:
        self._inputs: Iterator[np.ndarray] = (photo_input(p, size) for p in photos)

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._inputs, None)
        return None if batch is None else {"image": batch}


def session(path: Path) -> ort.InferenceSession:
    # As the service runs it: the same numbers, and the cost it pays, on this CPU.
    options = onnx_options.session_options(intra_op_threads=1)
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def cpu_ms_per_photo(model: ort.InferenceSession, batch: np.ndarray, runs: int = 100) -> float:
    for _ in range(5):
        model.run(None, {"image": batch})
    started = time.process_time()
    for _ in range(runs):
        model.run(None, {"image": batch})
    return (time.process_time() - started) / runs * 1000


def compare(source: Path, target: Path, size: int, photos: list[str]) -> None:
    fp32, int8 = session(source), session(target)
    cosines, agree = [], 0
    for relpath in photos:
        batch = photo_input(relpath, size)
        (f32, logits32), (f8, logits8) = (
            fp32.run(None, {"image": batch}),
            int8.run(None, {"image": batch}),
        )
        cosines.append(float(f32[0] @ f8[0] / np.linalg.norm(f32[0]) / np.linalg.norm(f8[0])))
        agree += int(logits32[0].argmax() == logits8[0].argmax())
    print(
        f"features cosine fp32 vs int8 on {len(photos)} calibration photos: "
        f"mean {np.mean(cosines):.4f}, min {np.min(cosines):.4f}; "
        f"ImageNet top-1 agreement {agree / len(photos):.0%}"
    )
    batch = photo_input(photos[0], size)
    print(
        f"CPU ms per photo (1 thread): fp32 {cpu_ms_per_photo(fp32, batch):.2f}, "
        f"int8 {cpu_ms_per_photo(int8, batch):.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", type=Path, default=SOURCE)
    parser.add_argument("--out", type=Path, default=TARGET)
    parser.add_argument("--photos", type=int, default=128, help="train photos to calibrate on")
    parser.add_argument("--method", choices=sorted(METHODS), default="minmax")
    parser.add_argument("--input-size", type=int, default=224, help="side of the input square")
    parser.add_argument("--seed", type=int, default=20261127)
    args = parser.parse_args()

    size = args.input_size
    split = load_split()
    photos = random.Random(args.seed).sample(split["train"], args.photos)
    with tempfile.TemporaryDirectory() as tmp:
        resized, prepared = Path(tmp) / "resized.onnx", Path(tmp) / "prepared.onnx"
        model = onnx.load(str(args.model))
        dims = model.graph.input[0].type.tensor_type.shape.dim
        dims[2].dim_value = dims[3].dim_value = size
        del model.graph.value_info[:]  # the export's inner shapes, for its own input size
        onnx.save(model, str(resized))
        # Shape inference and graph clean-up first, as onnxruntime recommends for quantization.
        quant_pre_process(str(resized), str(prepared))
        # The stem convolution stays fp32: it reads the pixels, and int8 there cost the most
        # (features cosine 0.979 → 0.992 with it kept, for ~0.5 ms per photo).
        stem = next(n.name for n in onnx.load(str(prepared)).graph.node if n.op_type == "Conv")
        quantize_static(
            str(prepared),
            str(args.out),
            TrainPhotos(photos, size),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=METHODS[args.method],
            nodes_to_exclude=[stem],
        )
        print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB) from {args.model}")
        compare(resized, args.out, size, split["calibration"][:96])


if __name__ == "__main__":
    main()
