"""`python -m ecosort_waste train-head` (`make train-head`): retrain the classifier head from
the shared photos plus the corrections people stored, and publish it as the new version.

Corrections live in this service's database (category) and storage (the photo); they are
exported to a temporary folder of files, which is what the head trainer reads.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import uuid
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import structlog
from PIL import UnidentifiedImageError
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ecosort_common.db import create_engine, create_sessionmaker
from ecosort_waste.classifier.head import MODELS_DIR, seed_heads
from ecosort_waste.config import get_settings
from ecosort_waste.models import Analysis, Correction
from ecosort_waste.pipeline import decode_stored
from ecosort_waste.storage import ObjectNotFound, Storage, storage_from_settings

log = structlog.get_logger(__name__)


# One person's corrections count for at most this many photos (their newest): the head is
# trained on a few hundred photos per class, and anyone can upload and correct thousands.
MAX_PHOTOS_PER_OWNER = 20


async def export_corrections(
    sessionmaker: async_sessionmaker[AsyncSession], storage: Storage, folder: Path
) -> list[tuple[Path, str]]:
    """(photo file, corrected category) for every distinct corrected photo.

    An analysis has at most one correction (`corrections.analysis_id` is unique), but one photo
    can be uploaded and corrected many times: stored images are addressed by their bytes, so
    such uploads share an `image_sha256`. A photo is voted on by people, not uploads: each
    owner's newest correction of it is one vote, and each owner votes on at most
    MAX_PHOTOS_PER_OWNER photos (their newest), so that no one person can outvote others by
    uploading a photo again and again, or flood the head with photos of their own. Each photo
    counts once, under its most voted category (a tie between categories drops it).
    """
    query = (
        select(
            Correction.owner_id,
            Correction.category,
            Analysis.image_key,
            Analysis.image_sha256,
        )
        .join(Analysis, Analysis.id == Correction.analysis_id)
        .order_by(Correction.created_at.desc(), Correction.id)
    )
    async with sessionmaker() as session:
        rows = (await session.execute(query)).all()
    votes: dict[str, dict[uuid.UUID, str]] = {}  # photo → owner → their newest category
    keys: dict[str, list[str]] = {}  # photo → its stored copies, newest first
    photos_of: Counter[uuid.UUID] = Counter()
    for row in rows:  # newest first
        keys.setdefault(row.image_sha256, []).append(row.image_key)
        owners = votes.setdefault(row.image_sha256, {})
        if row.owner_id in owners or photos_of[row.owner_id] >= MAX_PHOTOS_PER_OWNER:
            continue
        owners[row.owner_id] = row.category
        photos_of[row.owner_id] += 1
    examples: list[tuple[Path, str]] = []
    for image_sha256 in sorted(votes):
        if not votes[image_sha256]:
            continue  # only votes past their owners' caps
        category = _agreed_category(list(votes[image_sha256].values()))
        if category is None:
            log.warning("train_head.photo_disputed", image_sha256=image_sha256)
            continue
        data = await _readable_photo(storage, keys[image_sha256])
        if data is None:
            continue
        path = folder / f"{image_sha256}.jpg"
        path.write_bytes(data)
        examples.append((path, category))
    return examples


def _agreed_category(categories: list[str]) -> str | None:
    ranked = Counter(categories).most_common(2)
    if len(ranked) > 1 and ranked[0][1] == ranked[1][1]:
        return None
    return ranked[0][0]


async def _readable_photo(storage: Storage, keys: list[str]) -> bytes | None:
    """The first of one photo's stored copies that exists and decodes as the worker reads it
    (training would stop on a bad one)."""
    for key in dict.fromkeys(keys):
        try:
            data = await asyncio.to_thread(storage.get, key)
        except ObjectNotFound:
            log.warning("train_head.photo_missing", image_key=key)
            continue
        try:
            decode_stored(data)
        except (UnidentifiedImageError, OSError):
            log.warning("train_head.photo_unreadable", image_key=key)
            continue
        return data
    return None


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
    parser.add_argument(
        "--no-corrections",
        action="store_true",
        help="train on the shared photos alone, without reading the database",
    )
    parser.add_argument(
        "--allow-worse",
        action="store_true",
        help="publish the new head even if it does worse on the validation photos than the "
        "current one",
    )
    args = parser.parse_args(argv)
    # onnxruntime: only when training
    from ecosort_waste.classifier.training import HeadNotBetter, train_head

    settings = get_settings()
    heads_dir = args.heads_dir or (
        Path(settings.classifier_heads_dir) if settings.classifier_heads_dir else None
    )
    with tempfile.TemporaryDirectory(prefix="ecosort-corrections-") as folder:
        corrections: list[tuple[Path, str]] = []
        if not args.no_corrections:
            try:
                corrections = asyncio.run(_stored_corrections(Path(folder)))
            except (OSError, SQLAlchemyError) as exc:
                # A head published without the corrections would silently undo them.
                print(
                    f"cannot read the stored corrections ({type(exc).__name__}); is the "
                    "database up (`make run`)? To train on the shared photos alone, pass "
                    "--no-corrections.",
                    file=sys.stderr,
                )
                return 2
            print(f"stored corrections with their photos: {len(corrections)}")
        if heads_dir is not None:  # numbered on from the shipped head, beside it
            seed_heads(heads_dir, MODELS_DIR / "heads")
        try:
            path = train_head(
                corrections,
                photos=args.photos,
                heads_dir=heads_dir,
                limit_per_class=args.limit_per_class,
                allow_worse=args.allow_worse,
            )
        except HeadNotBetter as exc:
            print(
                f"{exc}; the service keeps its current head. To publish it anyway, pass "
                "--allow-worse.",
                file=sys.stderr,
            )
            return 3
    print(f"new head: {path} (the service loads it on its next classification)")
    return 0
