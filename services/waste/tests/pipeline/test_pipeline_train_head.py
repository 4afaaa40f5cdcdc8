"""`python -m ecosort_waste train-head`: stored corrections (database + storage) join the shared
photos, and a new versioned head is published that the local classifier then uses."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from PIL import Image
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ecosort_waste import retrain
from ecosort_waste.classifier.head import load_head
from ecosort_waste.classifier.local import MODELS_DIR, LocalClassifier
from ecosort_waste.config import Settings
from ecosort_waste.models import Analysis, Correction
from ecosort_waste.retrain import export_corrections
from ecosort_waste.storage import storage_from_settings

from .conftest import SHARED_PHOTOS, photo_bytes


async def corrected_analysis(
    sessionmaker: async_sessionmaker[AsyncSession],
    settings: Settings,
    photo: str,
    category: str,
    *,
    store: bool = True,
    owner_id: uuid.UUID | None = None,
) -> uuid.UUID:
    analysis_id, owner_id = uuid.uuid4(), owner_id or uuid.uuid4()
    key = f"analyses/{analysis_id}.jpg"
    data = photo_bytes(photo)
    # Stored images are named by their bytes: the same photo uploaded again has the same sha256.
    if store:
        storage_from_settings(settings).put(key, data, "image/jpeg")
    async with sessionmaker() as session, session.begin():
        session.add(
            Analysis(
                id=analysis_id,
                owner_id=owner_id,
                status="completed",
                progress=100,
                image_key=key,
                image_sha256=hashlib.sha256(data).hexdigest(),
            )
        )
        await session.flush()
        session.add(Correction(analysis_id=analysis_id, owner_id=owner_id, category=category))
    return analysis_id


async def test_export_takes_each_correction_with_its_stored_photo(
    sessionmaker: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    settings = Settings(data_dir=str(tmp_path / "data"))
    await corrected_analysis(sessionmaker, settings, "plastic/plastic10.jpg", "pet_clear")
    await corrected_analysis(sessionmaker, settings, "glass/glass2.jpg", "glass_bottle")
    await corrected_analysis(sessionmaker, settings, "trash/trash100.jpg", "general", store=False)
    unreadable = await corrected_analysis(
        sessionmaker, settings, "trash/trash101.jpg", "general", store=False
    )
    async with sessionmaker() as session:
        key = (await session.get(Analysis, unreadable)).image_key  # type: ignore[union-attr]
    storage_from_settings(settings).put(key, b"\xff\xd8\xff\xe0 half a jpeg", "image/jpeg")
    folder = tmp_path / "export"
    folder.mkdir()

    examples = await export_corrections(sessionmaker, storage_from_settings(settings), folder)

    # The lost and the unreadable photo are skipped: not a reason to stop.
    assert sorted(code for _, code in examples) == ["glass_bottle", "pet_clear"]
    for path, _ in examples:
        Image.open(io.BytesIO(path.read_bytes())).verify()


async def test_a_photo_counts_once_under_its_most_frequent_correction(
    sessionmaker: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    settings = Settings(data_dir=str(tmp_path / "data"))
    for _ in range(5):  # one battery photo, uploaded and corrected five times
        await corrected_analysis(sessionmaker, settings, "metal/metal5.jpg", "battery")
    for code in ("can", "can", "scrap_metal"):
        await corrected_analysis(sessionmaker, settings, "metal/metal6.jpg", code)
    for code in ("plastic", "pet_clear"):  # a tie: nothing to learn from
        await corrected_analysis(sessionmaker, settings, "plastic/plastic7.jpg", code)
    folder = tmp_path / "export"
    folder.mkdir()

    examples = await export_corrections(sessionmaker, storage_from_settings(settings), folder)

    assert sorted(code for _, code in examples) == ["battery", "can"]
    assert len({path.read_bytes() for path, _ in examples}) == 2


async def test_one_person_cannot_outvote_others_or_flood_the_head(
    sessionmaker: async_sessionmaker[AsyncSession],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Corrections are votes of people, not of uploads: one person uploading a photo again and
    again has one vote on it, and one person's corrections of many photos count up to a cap."""
    monkeypatch.setattr(retrain, "MAX_PHOTOS_PER_OWNER", 3)
    settings = Settings(data_dir=str(tmp_path / "data"))
    bob, mallory = uuid.uuid4(), uuid.uuid4()
    for _ in range(3):  # one can photo, uploaded three times by one person, called a battery
        await corrected_analysis(
            sessionmaker, settings, "metal/metal7.jpg", "battery", owner_id=bob
        )
    for _ in range(2):  # two other people call it a can
        await corrected_analysis(sessionmaker, settings, "metal/metal7.jpg", "can")
    for i in range(100, 106):  # and another person calls six cans batteries
        await corrected_analysis(
            sessionmaker, settings, f"metal/metal{i}.jpg", "battery", owner_id=mallory
        )
    folder = tmp_path / "export"
    folder.mkdir()

    examples = await export_corrections(sessionmaker, storage_from_settings(settings), folder)

    by_photo = {path.name: code for path, code in examples}
    metal7 = hashlib.sha256(photo_bytes("metal/metal7.jpg")).hexdigest()
    assert by_photo.pop(f"{metal7}.jpg") == "can"
    # At most three of the person's photos (their newest), each once.
    assert list(by_photo.values()) == ["battery"] * 3
    newest = {
        hashlib.sha256(photo_bytes(f"metal/metal{i}.jpg")).hexdigest() for i in (103, 104, 105)
    }
    assert {name.removesuffix(".jpg") for name in by_photo} == newest


async def train_head(
    heads: Path, *, allow_worse: bool = True, **env: str
) -> subprocess.CompletedProcess[str]:
    """`python -m ecosort_waste train-head` on two photos per class, publishing to `heads`
    (`--allow-worse`: two photos per class do not make a better head than the shipped one)."""
    return await asyncio.to_thread(
        subprocess.run,
        [
            sys.executable,
            "-m",
            "ecosort_waste",
            "train-head",
            "--limit-per-class",
            "2",
            *(["--allow-worse"] if allow_worse else []),
        ],
        env={
            **os.environ,
            "CLASSIFIER_HEADS_DIR": str(heads),
            "WASTE_PHOTOS_DIR": str(SHARED_PHOTOS),
            **env,
        },
        capture_output=True,
        text=True,
        timeout=300,
    )


async def test_train_head_stops_when_the_corrections_cannot_be_read(tmp_path: Path) -> None:
    """Publishing a head without them would undo every correction people made."""
    heads = tmp_path / "heads"
    shutil.copytree(MODELS_DIR / "heads", heads)
    before = sorted(path.name for path in heads.iterdir())

    finished = await train_head(
        heads, DATABASE_URL="postgresql+psycopg://postgres@127.0.0.1:1/nothing"
    )

    assert finished.returncode == 2, finished.stdout[-2000:]
    assert "--no-corrections" in finished.stderr
    assert sorted(path.name for path in heads.iterdir()) == before


async def test_train_head_keeps_the_current_head_when_the_new_one_is_worse(
    database_url: str, tmp_path: Path
) -> None:
    """Two photos per class make a worse head than the shipped one: the service keeps its own."""
    heads = tmp_path / "heads"
    shipped = (MODELS_DIR / "heads" / "current").read_text()

    finished = await train_head(
        heads, allow_worse=False, DATABASE_URL=database_url, DATA_DIR=str(tmp_path / "data")
    )

    assert finished.returncode == 3, finished.stderr[-3000:]
    assert "not published" in finished.stderr and "--allow-worse" in finished.stderr
    assert (heads / "current").read_text() == shipped
    assert sorted(path.name for path in heads.glob("head-v*.npz")) == [shipped.strip()]


async def test_train_head_publishes_a_new_version_the_classifier_picks_up(
    sessionmaker: async_sessionmaker[AsyncSession], database_url: str, tmp_path: Path
) -> None:
    settings = Settings(data_dir=str(tmp_path / "data"))
    await corrected_analysis(sessionmaker, settings, "metal/metal2.jpg", "can")
    packaged = {path.name: path.read_bytes() for path in (MODELS_DIR / "heads").iterdir()}
    # A folder of its own, empty as the local stack's is at first: the shipped head is copied
    # in, and the new version numbered on from it.
    heads = tmp_path / "heads"
    before = (MODELS_DIR / "heads" / "current").read_text().strip()
    photo = Image.open(SHARED_PHOTOS / "metal/metal3.jpg")

    finished = await train_head(heads, DATABASE_URL=database_url, DATA_DIR=settings.data_dir)
    classifier = LocalClassifier(heads_dir=heads)

    assert finished.returncode == 0, finished.stderr[-3000:]
    assert "stored corrections with their photos: 1" in finished.stdout
    after = (heads / "current").read_text().strip()
    assert after != before and (heads / after).exists() and (heads / before).exists()
    assert Path(after).stem == f"head-v{int(Path(before).stem.removeprefix('head-v')) + 1}"
    assert (heads / before).read_bytes() == packaged[before]
    assert {path.name: path.read_bytes() for path in (MODELS_DIR / "heads").iterdir()} == packaged
    # It prints the validation figures it measured and recorded in the new head.
    (printed,) = [line for line in finished.stdout.splitlines() if line.startswith("validation: ")]
    figures = json.loads(printed.removeprefix("validation: "))
    assert figures == load_head(heads / after).metrics["validation"]
    assert figures["images"] > 0 and 0 <= figures["class_accuracy"] <= 1
    assert classifier.classify(photo).head_version == Path(after).stem
