"""One line that says what machine a figure was taken on.

The CPU model and its int8 instructions come first because they move the classifier's figures
most: onnxruntime's int8 convolutions use VNNI dot products where the CPU has them (AVX-512 VNNI,
or AVX-VNNI) and plain AVX2 otherwise, and the same network ran 4.5-5.5x slower per view on an
AVX2-only EPYC than on the Xeon of the fourth session (bench/README.md).
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

# Best first: what onnxruntime's MLAS picks for uint8 x int8 products on x86-64.
INT8_INSTRUCTIONS = (
    ("avx512_vnni", "AVX-512 VNNI"),
    ("avx_vnni", "AVX-VNNI"),
    ("avx512bw", "AVX-512 (no VNNI)"),
    ("avx2", "AVX2 only (no VNNI)"),
)


def cpu_info(cpuinfo: Path = Path("/proc/cpuinfo")) -> tuple[str, str]:
    """(model name, int8 instruction set); platform names where /proc is absent."""
    try:
        lines = cpuinfo.read_text().splitlines()
    except OSError:
        return platform.processor() or platform.machine(), "unknown"
    # Every CPU of the VM repeats the same fields; the last one's stand.
    fields = dict(line.split(":", 1) for line in lines if ":" in line)
    fields = {key.strip(): value.strip() for key, value in fields.items()}
    flags = set(fields.get("flags", "").split())
    int8 = next((name for flag, name in INT8_INSTRUCTIONS if flag in flags), "none of AVX2/AVX-512")
    return fields.get("model name", platform.machine()), int8


def describe() -> str:
    model, int8 = cpu_info()
    return (
        f"{model} ({platform.machine()}), {os.cpu_count()} CPUs, int8: {int8}; "
        f"Python {platform.python_version()}; load {os.getloadavg()[0]:.1f}"
    )


if __name__ == "__main__":
    print(describe())
