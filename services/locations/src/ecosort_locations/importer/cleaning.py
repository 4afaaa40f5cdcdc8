"""Checks on imported coordinates. Public files carry quirks (PROVENANCE.md): placeholder
coordinates shared by many different addresses, rows placed in the wrong city, points outside
Korea. Such coordinates are dropped (the row is then geocoded or skipped), never trusted."""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable

from ecosort_locations.geo import haversine_m, in_korea
from ecosort_locations.importer.readers import RawPoint

# A pair of coordinates given to this many different addresses is a placeholder, not a place.
PLACEHOLDER_MIN_ADDRESSES = 5
# A 시·군·구 spans at most ~60 km; further than this from its district's median is misplaced.
FAR_FROM_REGION_M = 50_000
REGION_MIN_ROWS = 5


def drop_implausible_coordinates(points: list[RawPoint], counts: Counter[str]) -> None:
    """Clear lat/lng in place where they cannot be right, counting why."""
    for point in points:
        if point.lat is not None and point.lng is not None and not in_korea(point.lat, point.lng):
            _clear(point, counts, "out_of_korea")
    for point in _placeholders(points):
        _clear(point, counts, "placeholder_coordinates")
    for point in _far_from_region(points):
        _clear(point, counts, "far_from_region")


def _clear(point: RawPoint, counts: Counter[str], reason: str) -> None:
    point.lat = point.lng = None
    counts[reason] += 1


def _located(points: Iterable[RawPoint]) -> list[tuple[RawPoint, float, float]]:
    return [(p, p.lat, p.lng) for p in points if p.lat is not None and p.lng is not None]


def _placeholders(points: list[RawPoint]) -> list[RawPoint]:
    located = _located(points)
    addresses: dict[tuple[float, float], set[str]] = defaultdict(set)
    for point, lat, lng in located:
        addresses[(lat, lng)].add(point.address)
    shared = {xy for xy, seen in addresses.items() if len(seen) >= PLACEHOLDER_MIN_ADDRESSES}
    return [point for point, lat, lng in located if (lat, lng) in shared]


def _far_from_region(points: list[RawPoint]) -> list[RawPoint]:
    by_region: dict[str, list[tuple[RawPoint, float, float]]] = defaultdict(list)
    for point, lat, lng in _located(points):
        if point.region is not None:
            by_region[point.region].append((point, lat, lng))
    misplaced = []
    for members in by_region.values():
        if len(members) < REGION_MIN_ROWS:
            continue
        mid_lat = statistics.median(lat for _, lat, _ in members)
        mid_lng = statistics.median(lng for _, _, lng in members)
        misplaced += [
            point
            for point, lat, lng in members
            if haversine_m(mid_lat, mid_lng, lat, lng) > FAR_FROM_REGION_M
        ]
    return misplaced


def drop_repeated_rows(points: list[RawPoint], counts: Counter[str]) -> list[RawPoint]:
    """Keep the first row of each source id (public files repeat rows)."""
    seen: set[str] = set()
    kept = []
    for point in points:
        if point.source_id in seen:
            counts["duplicate_rows"] += 1
            continue
        seen.add(point.source_id)
        kept.append(point)
    return kept
