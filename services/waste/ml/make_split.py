"""Fixed, stratified split of the shared photos → classifier/artifacts/split.json.

validation (20% per class): reported once, never used to choose anything.
calibration (20% of the rest): hyper-parameters, temperature and the not-sure threshold.
train: the remainder.
"""

from __future__ import annotations

import json

import numpy as np
from buildlib import PHOTOS_DIR, SPLIT_FILE, TRASHNET_CLASSES

SEED = 20261127


def main() -> None:
    rng = np.random.default_rng(SEED)
    split: dict[str, list[str]] = {"train": [], "calibration": [], "validation": []}
    for name in TRASHNET_CLASSES:
        files = sorted(f"{name}/{p.name}" for p in (PHOTOS_DIR / name).glob("*.jpg"))
        order = rng.permutation(len(files))
        n_val = round(0.2 * len(files))
        n_cal = round(0.2 * (len(files) - n_val))
        split["validation"] += [files[i] for i in order[:n_val]]
        split["calibration"] += [files[i] for i in order[n_val : n_val + n_cal]]
        split["train"] += [files[i] for i in order[n_val + n_cal :]]
    split = {k: sorted(v) for k, v in split.items()}
    split_doc = {"seed": SEED, **split}
    SPLIT_FILE.write_text(json.dumps(split_doc, indent=0) + "\n")
    print({k: len(v) for k, v in split.items()})


if __name__ == "__main__":
    main()
