"""How every onnxruntime session of the classifier is configured, in the service and in the
build scripts (ml/buildlib.py loads this file by path), so both compute the same numbers."""

from __future__ import annotations

import platform
from pathlib import Path

import onnxruntime as ort


def int8_sums_saturate(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether onnxruntime's fast int8 kernels add products in 16-bit sums that saturate.

    On x86-64 without VNNI (AVX2, AVX-512BW) its uint8 x int8 products go through
    vpmaddubsw, which adds pairs of them into 16 bits; VNNI's dot products add in 32 bits, and
    onnxruntime leaves other architectures' kernels alone.
    """
    if platform.machine().lower() not in {"x86_64", "amd64"}:
        return False
    try:
        text = cpuinfo.read_text()
    except OSError:
        return True  # unknown x86 CPU: the exact kernels, whatever they cost
    flags = {
        flag for line in text.splitlines() if line.startswith("flags") for flag in line.split()
    }
    return not flags & {"avx512_vnni", "avx_vnni"}


def session_options(intra_op_threads: int = 1) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if int8_sums_saturate():
        # There, the fast uint8 x int8 kernels change the answers (validation: 3 points more
        # "not sure", a category answer lost). This computes those layers in uint8 x uint8, so
        # every CPU gives the answers the head was validated on, at ~1.5x the cost. Not set
        # elsewhere: on a VNNI Xeon it gave the same numbers at 2.5x the cost (MODEL_CARD.md).
        options.add_session_config_entry("session.x64quantprecision", "1")
    return options
