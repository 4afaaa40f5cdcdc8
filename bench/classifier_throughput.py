"""Throughput of the local classifier on this machine, per core (onnxruntime, one intra-op
thread): the figure a Celery worker process gets (one process per core).

    uv run --frozen python bench/classifier_throughput.py [--seconds 10] [--threads 1]

Prints images/s for: the whole `classify()` (preprocessing from a decoded photo for both
networks, both test-time-augmentation views, head, decision), the same without test-time
augmentation, and each bare ONNX network at batch 1 and 8.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import machine
import numpy as np
from PIL import Image

from ecosort_waste.classifier.local import LocalClassifier, OnnxBackbone
from ecosort_waste.classifier.training import load_split, photos_dir


def rate(work: Callable[[int], int], seconds: float) -> dict[str, float]:
    """Images per wall-clock second and per CPU second of `work(i)` (which returns how many
    images it handled), after one warm-up call. With one intra-op thread onnxruntime computes
    on the calling thread, so CPU seconds are this core's work even when other processes
    share the machine (then wall-clock figures drop, CPU-second figures do not)."""
    work(0)
    done, calls = 0, 0
    wall, cpu = time.perf_counter(), time.process_time()
    while time.perf_counter() - wall < seconds:
        done += work(calls)
        calls += 1
    return {
        "per_wall_s": round(done / (time.perf_counter() - wall), 1),
        "per_cpu_s": round(done / (time.process_time() - cpu), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--photos", type=int, default=24)
    args = parser.parse_args()

    files = load_split(limit_per_class=args.photos // 6)["validation"]
    images = []
    for name in files:
        with Image.open(photos_dir() / name) as image:
            images.append(image.convert("RGB"))
    with_tta = LocalClassifier(intra_op_threads=args.threads, test_time_augmentation=True)
    without_tta = LocalClassifier(intra_op_threads=args.threads, test_time_augmentation=False)
    networks = with_tta.backbones.members

    def classify_tta(i: int) -> int:
        with_tta.classify(images[i % len(images)])
        return 1

    def classify_single(i: int) -> int:
        without_tta.classify(images[i % len(images)])
        return 1

    def onnx_batch(network: OnnxBackbone, size: int) -> Callable[[int], int]:
        side = network.input_size
        batch = np.random.default_rng(0).standard_normal((size, 3, side, side)).astype(np.float32)

        def run(_: int) -> int:
            network.run(batch)
            return size

        return run

    results = {
        "classify_tta_images_per_s": rate(classify_tta, args.seconds),
        "classify_no_tta_images_per_s": rate(classify_single, args.seconds),
    }
    for network in networks:  # the first one's batch-1 figure is bench/README's speed index
        for size in (1, 8):
            name = f"{network.path.stem}_batch{size}_views_per_s"
            results[name] = rate(onnx_batch(network, size), args.seconds)
    # Per core: wall-clock rates shared by the threads' cores; CPU-second rates already are.
    per_core = {
        name: {
            "per_wall_s": round(figures["per_wall_s"] / args.threads, 1),
            "per_cpu_s": figures["per_cpu_s"],
        }
        for name, figures in results.items()
    }
    print(
        json.dumps(
            {
                "intra_op_threads": args.threads,
                "machine": machine.describe(),
                "per_core": per_core,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
