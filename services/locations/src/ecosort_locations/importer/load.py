"""Importing a file: read, check coordinates, geocode what lacks them (when Kakao Local is
configured), leave out bins another dataset already has, and upsert by (source, source_id)."""

from __future__ import annotations

import asyncio
import hashlib
import math
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import structlog
from sqlalchemy import func, insert, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from ecosort_locations.geo import METRES_PER_DEGREE_LAT, haversine_m, in_korea
from ecosort_locations.importer.cleaning import drop_implausible_coordinates, drop_repeated_rows
from ecosort_locations.importer.readers import RawPoint, read_points
from ecosort_locations.kakao import KakaoLocalClient, KakaoLocalError
from ecosort_locations.models import CollectionPoint, DatasetImport

# Stable ids: the same public row gets the same id in every environment and on every import.
POINT_ID_NAMESPACE = uuid.UUID("5b0c7c4e-2f7e-4c1e-9a55-6f3c3e0b8a11")
# Two datasets listing a bin of the same type this close together list the same bin.
SAME_BIN_M = 15.0
UPSERT_BATCH = 1000
log = structlog.get_logger("ecosort.locations.import")


@dataclass
class ImportReport:
    file_name: str
    layout: str
    point_type: str
    sha256: str
    counts: Counter[str] = field(default_factory=Counter)

    def as_json(self) -> dict[str, Any]:
        return {
            "file": self.file_name,
            "layout": self.layout,
            "type": self.point_type,
            "counts": dict(sorted(self.counts.items())),
        }


def point_id(source: str, source_id: str) -> uuid.UUID:
    return uuid.uuid5(POINT_ID_NAMESPACE, f"{source}|{source_id}")


async def _geocode_missing(
    points: list[RawPoint],
    geocoder: KakaoLocalClient | None,
    concurrency: int,
    counts: Counter[str],
) -> None:
    missing = [p for p in points if p.lat is None or p.lng is None]
    if not missing:
        return
    if geocoder is None:
        counts["skipped_no_coordinates"] += len(missing)
        return
    gate = asyncio.Semaphore(concurrency)

    async def locate(point: RawPoint) -> None:
        async with gate:
            try:
                found = await geocoder.search_address(point.address, size=1)
            except KakaoLocalError as exc:
                log.warning("geocode_failed", address=point.address, error=exc.detail)
                found = []
        if found and in_korea(found[0].lat, found[0].lng):
            point.lat, point.lng = found[0].lat, found[0].lng
            counts["geocoded"] += 1
        else:
            counts["skipped_geocode_failed"] += 1

    await asyncio.gather(*(locate(p) for p in missing if p.address))
    counts["skipped_no_coordinates"] += sum(1 for p in missing if not p.address)


class _Grid:
    """Existing points in cells of about SAME_BIN_M, to find a neighbour without a scan."""

    def __init__(self, rows: list[Any]) -> None:
        self.cell = SAME_BIN_M / METRES_PER_DEGREE_LAT
        self.cells: dict[tuple[int, int], list[tuple[float, float]]] = defaultdict(list)
        for row in rows:
            self.cells[self._key(row.lat, row.lng)].append((row.lat, row.lng))

    def _key(self, lat: float, lng: float) -> tuple[int, int]:
        # Longitude cells are as wide in metres as latitude cells at Korean latitudes (cos 37°).
        return (math.floor(lat / self.cell), math.floor(lng * 0.8 / self.cell))

    def has_neighbour(self, lat: float, lng: float) -> bool:
        i, j = self._key(lat, lng)
        return any(
            haversine_m(lat, lng, other_lat, other_lng) <= SAME_BIN_M
            for di in (-1, 0, 1)
            for dj in (-1, 0, 1)
            for other_lat, other_lng in self.cells.get((i + di, j + dj), ())
        )


async def _drop_known_elsewhere(
    session: AsyncSession, points: list[RawPoint], point_type: str, counts: Counter[str]
) -> list[RawPoint]:
    sources = {p.source for p in points}
    existing = (
        await session.execute(
            select(CollectionPoint.lat, CollectionPoint.lng).where(
                CollectionPoint.type == point_type, CollectionPoint.source.not_in(sources)
            )
        )
    ).all()
    if not existing:
        return points
    grid = _Grid(list(existing))
    kept = []
    for point in points:
        assert point.lat is not None and point.lng is not None
        if grid.has_neighbour(point.lat, point.lng):
            counts["same_as_other_source"] += 1
        else:
            kept.append(point)
    return kept


UPSERT_COLUMNS = ("type", "name", "address", "detail", "region", "lat", "lng", "geocoded")


def _upsert_statement() -> Any:
    """One statement, compiled once and sent as an executemany batch (insertmanyvalues)."""
    stmt = pg_insert(CollectionPoint)
    return stmt.on_conflict_do_update(
        index_elements=[CollectionPoint.source, CollectionPoint.source_id],
        set_={
            **{name: stmt.excluded[name] for name in UPSERT_COLUMNS},
            "source_date": stmt.excluded.source_date,
            "updated_at": func.now(),
        },
    )


async def _upsert(
    session: AsyncSession, points: list[RawPoint], point_type: str, geocoded: set[int]
) -> None:
    values = [
        {
            "id": point_id(p.source, p.source_id),
            "type": point_type,
            "name": p.name[:200],
            "address": p.address[:300],
            "detail": p.detail[:300] if p.detail else None,
            "region": p.region[:60] if p.region else None,
            "lat": p.lat,
            "lng": p.lng,
            "geocoded": id(p) in geocoded,
            "source": p.source,
            "source_id": p.source_id[:200],
            "source_date": p.source_date,
        }
        for p in points
    ]
    for start in range(0, len(values), UPSERT_BATCH):
        await session.execute(_upsert_statement(), values[start : start + UPSERT_BATCH])


async def import_file(
    session: AsyncSession,
    file_name: str,
    data: bytes,
    point_type: str,
    *,
    geocoder: KakaoLocalClient | None = None,
    geocode_concurrency: int = 4,
) -> ImportReport:
    """Import one file in the caller's transaction and record it in dataset_imports."""
    layout, points = read_points(file_name, data, point_type)
    report = ImportReport(file_name, layout, point_type, hashlib.sha256(data).hexdigest())
    counts = report.counts
    counts["rows_read"] = len(points)
    points = drop_repeated_rows(points, counts)
    drop_implausible_coordinates(points, counts)
    had_coordinates = {id(p) for p in points if p.lat is not None}
    await _geocode_missing(points, geocoder, geocode_concurrency, counts)
    located = [p for p in points if p.lat is not None and p.lng is not None]
    geocoded = {id(p) for p in located} - had_coordinates
    located = await _drop_known_elsewhere(session, located, point_type, counts)
    await _upsert(session, located, point_type, geocoded)
    counts["imported"] = len(located)
    await session.execute(
        insert(DatasetImport).values(
            id=uuid.uuid4(),
            file_name=file_name,
            sha256=report.sha256,
            point_type=point_type,
            counts=report.as_json()["counts"],
        )
    )
    # Fresh planner statistics, so the (lat, lng) index is chosen right after a bulk load.
    await session.execute(text("ANALYZE collection_points"))
    log.info("collection_points_imported", **report.as_json())
    return report


async def already_imported(
    session: AsyncSession, sha256: str, point_type: str, *, can_geocode: bool
) -> bool:
    """Whether this file was imported as this type before, and nothing it left out could be
    added now: a file whose rows lacked coordinates is imported again once a geocoder is there."""
    previous = (
        await session.scalars(
            select(DatasetImport.counts).where(
                DatasetImport.sha256 == sha256, DatasetImport.point_type == point_type
            )
        )
    ).all()
    if not can_geocode:
        return bool(previous)
    return any(not counts.get("skipped_no_coordinates") for counts in previous)
