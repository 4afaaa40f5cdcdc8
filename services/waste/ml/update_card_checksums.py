"""Rewrite the checksum block of classifier/artifacts/MODEL_CARD.md from the files on disk:
the ONNX networks, every head file and split.json (`sha256  path` lines, as `sha256sum -c`
reads them).

    python services/waste/ml/update_card_checksums.py
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

MODELS_DIR = (
    Path(__file__).resolve().parents[1] / "src" / "ecosort_waste" / "classifier" / "artifacts"
)
BLOCK = re.compile(r"(<!-- sha256:begin -->\n).*?(<!-- sha256:end -->)", re.DOTALL)


def main() -> None:
    files = [*sorted(MODELS_DIR.glob("*.onnx")), MODELS_DIR / "split.json"]
    files += sorted((MODELS_DIR / "heads").glob("head-v*.npz"))
    lines = [
        f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.relative_to(MODELS_DIR).as_posix()}"
        for p in files
    ]
    card = MODELS_DIR / "MODEL_CARD.md"
    text = card.read_text()
    body = "```\n" + "\n".join(lines) + "\n```\n"
    new, count = BLOCK.subn(lambda m: m.group(1) + body + m.group(2), text)
    if count != 1:
        raise SystemExit("MODEL_CARD.md has no <!-- sha256:begin/end --> block")
    card.write_text(new)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
