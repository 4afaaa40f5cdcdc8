"""`python -m ecosort_waste train-head` (`make train-head`): retrain the classifier head from
the shared photos plus the corrections people stored, and publish it as the new version.

Corrections live in this service's database (category) and storage (the photo); they are
exported to a temporary folder of files, which is what the head trainer reads.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from collections.abc import Sequence
from pathlib import Path

import structlog
from PIL import UnidentifiedImageError
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ecosort_common.db import create_engine, create_sessionmaker
from ecosort_waste.config import get_settings
from ecosort_waste.models import Analysis, Correction
from ecosort_waste.pipeline import decode_stored
from ecosort_waste.storage import ObjectNotFound, Storage, storage_from_settings

log = structlog.get_logger(__name__)


async def export_corrections(
    sessionmaker: async_sessionmaker[AsyncSession], storage: Storage, folder: Path
) -> list[tuple[Path, str]]:
    """(photo file, corrected category) for every corrected analysis: it has one correction,
    the latest (`corrections.analysis_id` is unique)."""
    query = select(Correction.analysis_id, Correction.category, Analysis.image_key).join(
        Analysis, Analysis.id == Correction.analysis_id
    )
    async with sessionmaker() as session:
        rows = (await session.execute(query)).all()
    examples: list[tuple[Path, str]] = []
    for row in rows:
        try:
            data = await asyncio.to_thread(storage.get, row.image_key)
        except ObjectNotFound:
            log.warning("train_head.photo_missing", analysis_id=str(row.analysis_id))
            continue
        try:
            decode_stored(data)  # as the worker reads it; training would stop on a bad one
        except (UnidentifiedImageError, OSError):
            log.warning("train_head.photo_unreadable", analysis_id=str(row.analysis_id))
            continue
        path = folder / f"{row.analysis_id}.jpg"
        path.write_bytes(data)
        examples.append((path, row.category))
    return examples


async def _stored_corrections(folder: Path) -> list[tuple[Path, str]]:
    settings = get_settings()
    engine = create_engine(settings.database_url, pool_size=1)
    try:
        return await export_corrections(
            create_sessionmaker(engine), storage_from_settings(settings), folder
        )
    finally:
        await engine.dispose()


def train_head_command(argv: Sequence[str]) -> int:
    """retrain the classifier head from the shared photos and stored corrections"""
    parser = argparse.ArgumentParser(prog="python -m ecosort_waste train-head")
    parser.add_argument(
        "--photos",
        type=Path,
        help="the shared photos (default: WASTE_PHOTOS_DIR, else "
        "../shared/data/waste-images beside the repository)",
    )
    parser.add_argument(
        "--heads-dir", type=Path, help="where heads are written (default: CLASSIFIER_HEADS_DIR)"
    )
    parser.add_argument(
        "--limit-per-class", type=int, help="use only this many photos per class (a quick check)"
    )
    args = parser.parse_args(argv)
    from ecosort_waste.classifier.training import train_head  # onnxruntime: only when training

    settings = get_settings()
    heads_dir = args.heads_dir or (
        Path(settings.classifier_heads_dir) if settings.classifier_heads_dir else None
    )
    with tempfile.TemporaryDirectory(prefix="ecosort-corrections-") as folder:
        try:
            corrections = asyncio.run(_stored_corrections(Path(folder)))
        except (OSError, SQLAlchemyError) as exc:
            # No database here (a fresh checkout): the shared photos alone still make a head.
            print(f"cannot read stored corrections ({type(exc).__name__}): shared photos only")
            corrections = []
        print(f"stored corrections with their photos: {len(corrections)}")
        path = train_head(
            corrections,
            photos=args.photos,
            heads_dir=heads_dir,
            limit_per_class=args.limit_per_class,
        )
    print(f"new head: {path} (the service loads it on its next classification)")
    return 0
