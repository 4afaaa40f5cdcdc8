"""Importing a file: read, check coordinates, geocode what lacks them (when Kakao Local is
configured), leave out bins another dataset already has, and make the file the whole listing of
its source (layout) for its type in the 시·군·구 it covers: rows upserted by (source, source_id),
rows it no longer lists deleted."""

from __future__ import annotations

import asyncio
import hashlib
import math
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

import structlog
from sqlalchemy import delete, func, insert, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from ecosort_locations.geo import KOREA_LAT, METRES_PER_DEGREE_LAT, haversine_m
from ecosort_locations.importer.cleaning import (
    SAME_BIN_M,
    address_key,
    drop_implausible_coordinates,
    drop_repeated_rows,
    put_swapped_coordinates_right,
)
from ecosort_locations.importer.readers import RawPoint, read_points
from ecosort_locations.kakao import KakaoLocalClient, KakaoLocalError
from ecosort_locations.models import CollectionPoint, DatasetImport

# Stable ids: the same public row gets the same id in every environment and on every import.
POINT_ID_NAMESPACE = uuid.UUID("5b0c7c4e-2f7e-4c1e-9a55-6f3c3e0b8a11")
# Two datasets listing a bin of the same type at one address in one 시·군·구 list the same bin,
# though they may geocode it apart: up to ~66 m for 마포대로20길 6-11 (Mapo vs nationwide file).
# The bound keeps separate bins that share a street-only address ("동일로239다길") apart.
SAME_ADDRESS_M = 100.0
# Cells as wide as SAME_BIN_M at the northernmost latitude imported (a degree of longitude
# shrinks northwards; wider cells further south), so a neighbour is at most one cell away.
LNG_SCALE = math.cos(math.radians(KOREA_LAT[1]))
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
                # Kakao down, out of quota or answering oddly: seeding tries these rows again.
                log.warning("geocode_failed", address=point.address, error=exc.detail)
                counts["skipped_geocode_failed"] += 1
                return
        if found:
            point.lat, point.lng = found[0].lat, found[0].lng
            counts["geocoded"] += 1
        else:
            # Kakao's answer for this address stands: asking again would find nothing either.
            counts["skipped_address_not_found"] += 1

    await asyncio.gather(*(locate(p) for p in missing if p.address))
    if without_address := sum(1 for p in missing if not p.address):
        counts["skipped_no_address"] += without_address


class _Located(Protocol):
    @property
    def lat(self) -> float: ...
    @property
    def lng(self) -> float: ...


L = TypeVar("L", bound=_Located)


class _Grid(Generic[L]):
    """Items by position in cells of about SAME_BIN_M, to find neighbours without a scan."""

    def __init__(self, items: Iterable[L]) -> None:
        self.cell = SAME_BIN_M / METRES_PER_DEGREE_LAT
        self.cells: dict[tuple[int, int], list[L]] = defaultdict(list)
        for item in items:
            self.cells[self._key(item.lat, item.lng)].append(item)

    def _key(self, lat: float, lng: float) -> tuple[int, int]:
        return (math.floor(lat / self.cell), math.floor(lng * LNG_SCALE / self.cell))

    def near(self, lat: float, lng: float) -> list[L]:
        """The items within SAME_BIN_M, nearest first."""
        i, j = self._key(lat, lng)
        found = [
            (haversine_m(lat, lng, item.lat, item.lng), item)
            for di in (-1, 0, 1)
            for dj in (-1, 0, 1)
            for item in self.cells.get((i + di, j + dj), ())
        ]
        return [item for d, item in sorted(found, key=lambda f: f[0]) if d <= SAME_BIN_M]

    def has_neighbour(self, lat: float, lng: float) -> bool:
        return bool(self.near(lat, lng))


async def _drop_known_elsewhere(
    session: AsyncSession, points: list[RawPoint], point_type: str, counts: Counter[str]
) -> list[RawPoint]:
    sources = {p.source for p in points}
    existing = (
        await session.execute(
            select(
                CollectionPoint.lat,
                CollectionPoint.lng,
                CollectionPoint.region,
                CollectionPoint.address,
            ).where(CollectionPoint.type == point_type, CollectionPoint.source.not_in(sources))
        )
    ).all()
    if not existing:
        return points
    grid = _Grid(existing)
    by_address: dict[tuple[str | None, str], list[tuple[float, float]]] = defaultdict(list)
    for row in existing:
        if key := address_key(row.address):
            by_address[(row.region, key)].append((row.lat, row.lng))
    kept = []
    for point in points:
        assert point.lat is not None and point.lng is not None
        lat, lng = point.lat, point.lng
        same_address = by_address.get((_region(point), address_key(point.address)), ())
        if grid.has_neighbour(lat, lng) or any(
            haversine_m(lat, lng, other_lat, other_lng) <= SAME_ADDRESS_M
            for other_lat, other_lng in same_address
        ):
            counts["same_as_other_source"] += 1
        else:
            kept.append(point)
    return kept


def _name(point: RawPoint) -> str:
    return point.name[:200]


def _region(point: RawPoint) -> str | None:
    return point.region[:60] if point.region else None


async def _replace_previous_version(
    session: AsyncSession,
    point_type: str,
    points: list[RawPoint],
    located: list[RawPoint],
    counts: Counter[str],
) -> dict[str, uuid.UUID]:
    """Make this file replace what earlier versions of it contributed, and return the id of
    each row of `located` by source_id.

    A file speaks for its source, for its type, in the 시·군·구 it lists (public files come per
    district or nationwide): rows stored there that it no longer lists are deleted. A row whose
    words changed (an address typo fixed gives it a new source_id) takes over its earlier self,
    id and all: same name, within SAME_BIN_M, no longer listed under its old words."""
    if not points:
        return {}
    source = points[0].source  # one file, one layout
    stored = (
        await session.execute(
            select(
                CollectionPoint.id,
                CollectionPoint.source_id,
                CollectionPoint.name,
                CollectionPoint.region,
                CollectionPoint.lat,
                CollectionPoint.lng,
            ).where(CollectionPoint.source == source, CollectionPoint.type == point_type)
        )
    ).all()
    # The file speaks for the 시·군·구 it lists only: a row elsewhere is neither taken over by a
    # bin of the same name across the border nor retired.
    regions = {_region(p) for p in points}
    everywhere, stored = stored, [row for row in stored if row.region in regions]
    _number_same_words(points, stored)
    ids = {row.source_id: row.id for row in stored}
    listed = {p.source_id for p in points}
    unlisted = _Grid(row for row in stored if row.source_id not in listed)
    adopted: dict[uuid.UUID, str] = {}
    for point in located:
        if point.source_id in ids:
            continue
        assert point.lat is not None and point.lng is not None
        for row in unlisted.near(point.lat, point.lng):
            if row.name == _name(point) and row.id not in adopted:
                adopted[row.id] = point.source_id
                ids[point.source_id] = row.id
                break
    if adopted:
        # Renamed first, so the upsert (on source, source_id) updates the row in place.
        await session.execute(
            update(CollectionPoint),
            [{"id": row_id, "source_id": sid[:200]} for row_id, sid in adopted.items()],
        )
        counts["corrected"] += len(adopted)
    retired = [row.id for row in stored if row.source_id not in listed and row.id not in adopted]
    for start in range(0, len(retired), UPSERT_BATCH):
        await session.execute(
            delete(CollectionPoint).where(
                CollectionPoint.id.in_(retired[start : start + UPSERT_BATCH])
            )
        )
    if retired:
        counts["retired"] += len(retired)
    taken = {row.id for row in everywhere} - set(retired)
    for point in located:
        if point.source_id not in ids:
            ids[point.source_id] = _new_id(source, point.source_id, taken)
            taken.add(ids[point.source_id])
    return ids


def _labelled(words: str, occurrence: int) -> str:
    return words if occurrence == 1 else f"{words}#{occurrence}"


def _number_same_words(points: list[RawPoint], stored: list[Any]) -> None:
    """Give each row the occurrence number (source_id) its bin was stored under, by position,
    not by its place in the file: a bin removed upstream must not pass its id to the next one
    listed in the same words. A row within SAME_BIN_M of a stored bin of its words (nearest
    first) is that bin; any other row gets the next number not used yet. A row alone in its
    words, stored alone, stays that bin wherever it moved (as an unnumbered row always did);
    a row without coordinates keeps a stored bin of its words no row claimed."""
    groups: dict[str, list[RawPoint]] = defaultdict(list)
    for point in points:
        groups[point.words].append(point)
    by_words: dict[str, dict[int, Any]] = defaultdict(dict)
    for row in stored:
        words, hash_sign, number = row.source_id.rpartition("#")
        if hash_sign and words in groups and number.isdigit() and int(number) > 1:
            by_words[words][int(number)] = row
        elif row.source_id in groups:
            by_words[row.source_id][1] = row
    for words, members in groups.items():
        rows = by_words.get(words, {})
        if len(members) == 1 and len(rows) <= 1:
            members[0].source_id = _labelled(words, next(iter(rows), 1))
            continue
        pairs = sorted(
            (haversine_m(p.lat, p.lng, row.lat, row.lng), i, number)
            for i, p in enumerate(members)
            if p.lat is not None and p.lng is not None
            for number, row in rows.items()
        )
        numbers: dict[int, int] = {}
        for distance, i, number in pairs:
            if distance > SAME_BIN_M:
                break
            if i not in numbers and number not in set(numbers.values()):
                numbers[i] = number
        unclaimed = sorted(set(rows) - set(numbers.values()))
        for i, p in enumerate(members):
            if i not in numbers and (p.lat is None or p.lng is None) and unclaimed:
                numbers[i] = unclaimed.pop(0)
        next_number = max([*rows, *numbers.values(), 0]) + 1
        for i, p in enumerate(members):
            if i not in numbers:
                numbers[i], next_number = next_number, next_number + 1
            p.source_id = _labelled(words, numbers[i])


def _new_id(source: str, source_id: str, taken: set[uuid.UUID]) -> uuid.UUID:
    candidate, attempt = point_id(source, source_id), 1
    # Taken only when an earlier correction gave a row this identity's id and the file now
    # lists both that row and these words again.
    while candidate in taken:
        attempt += 1
        candidate = point_id(source, f"{source_id}|{attempt}")
    return candidate


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
    session: AsyncSession,
    points: list[RawPoint],
    point_type: str,
    geocoded: set[int],
    ids: dict[str, uuid.UUID],
) -> None:
    values = [
        {
            "id": ids[p.source_id],
            "type": point_type,
            "name": _name(p),
            "address": p.address[:300],
            "detail": p.detail[:300] if p.detail else None,
            "region": _region(p),
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
    put_swapped_coordinates_right(points, counts)
    points = drop_repeated_rows(points, counts)
    drop_implausible_coordinates(points, counts)
    had_coordinates = {id(p) for p in points if p.lat is not None}
    await _geocode_missing(points, geocoder, geocode_concurrency, counts)
    located = [p for p in points if p.lat is not None and p.lng is not None]
    geocoded = {id(p) for p in located} - had_coordinates
    located = await _drop_known_elsewhere(session, located, point_type, counts)
    ids = await _replace_previous_version(session, point_type, points, located, counts)
    await _upsert(session, located, point_type, geocoded, ids)
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
    added now: a file whose rows lacked coordinates is imported again once a geocoder is there,
    and again after Kakao failed (down, out of quota) on some of them."""
    previous = (
        await session.scalars(
            select(DatasetImport.counts).where(
                DatasetImport.sha256 == sha256, DatasetImport.point_type == point_type
            )
        )
    ).all()
    if not can_geocode:
        return bool(previous)
    return any(
        not counts.get("skipped_no_coordinates") and not counts.get("skipped_geocode_failed")
        for counts in previous
    )
