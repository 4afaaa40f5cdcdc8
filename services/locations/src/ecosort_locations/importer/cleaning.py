"""Checks on imported coordinates. Public files carry quirks (PROVENANCE.md): placeholder
coordinates shared by many different addresses, rows placed in the wrong city, points outside
Korea. Such coordinates are dropped (the row is then geocoded or skipped), never trusted."""

from __future__ import annotations

import re
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable

from ecosort_locations.geo import haversine_m, in_korea
from ecosort_locations.importer.readers import RawPoint

# Two rows of a bin this close together are one bin (two listings of one spot).
SAME_BIN_M = 15.0
# A pair of coordinates given to this many different addresses is a placeholder, not a place.
PLACEHOLDER_MIN_ADDRESSES = 5
# A 시·군·구 spans at most ~60 km; further than this from its district's median is misplaced.
FAR_FROM_REGION_M = 50_000
REGION_MIN_ROWS = 5


def put_swapped_coordinates_right(points: list[RawPoint], counts: Counter[str]) -> None:
    """Swap back, in place, a pair given in the other order (위도 and 경도 columns mixed up):
    Korea's latitudes (33-39) and longitudes (124-132) never overlap, so it cannot be read two
    ways. Before drop_repeated_rows, which measures a repeat's distance by them."""
    for point in points:
        if point.lat is None or point.lng is None or in_korea(point.lat, point.lng):
            continue
        if in_korea(point.lng, point.lat):
            point.lat, point.lng = point.lng, point.lat
            counts["swapped_coordinates"] += 1


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
    """Keep one row per bin. Public files repeat rows, sometimes in another spacing of the same
    words, but they also list separate bins in the same words (five "주택가 골목" bins along
    one 노원구 alley): a repeat is the same bin only within SAME_BIN_M of a row kept under its
    identity (spaces ignored). Another bin gets that identity with its occurrence number in the
    file, provisionally: on import, load.py matches same-words rows to the stored ones by
    position, so a bin keeps its number when an earlier one is removed."""
    kept_by_identity: dict[str, list[RawPoint]] = defaultdict(list)
    kept_by_spelling: dict[str, list[RawPoint]] = defaultdict(list)
    kept = []
    for point in points:
        same_spelling = kept_by_spelling[point.spelling]
        repeated = next((other for other in same_spelling if _same_place(point, other)), None)
        if repeated is not None:
            if repeated.lat is None or repeated.lng is None:
                # The first listing lacked coordinates, this one has them: the bin is there.
                repeated.lat, repeated.lng = point.lat, point.lng
            counts["duplicate_rows"] += 1
            continue
        same_words = kept_by_identity[point.source_id]
        if same_words:
            counts["same_words_other_place"] += 1
            point.source_id = f"{point.source_id}#{len(same_words) + 1}"
        same_words.append(point)
        same_spelling.append(point)
        kept.append(point)
    return kept


def _same_place(a: RawPoint, b: RawPoint) -> bool:
    if a.lat is None or a.lng is None or b.lat is None or b.lng is None:
        return True  # nothing tells them apart: the same words are the same bin
    return haversine_m(a.lat, a.lng, b.lat, b.lng) <= SAME_BIN_M


_PARENTHESES = re.compile(r"\([^)]*\)")
# A road name (마포대로, 마포대로20길, 충훈로71번길16), not a district (종로구) or 동 (을지로동).
_ROAD_NAME = re.compile(r"(?:로|길)(?:\d|$)")


def address_key(address: str) -> str:
    """An address reduced to what two datasets write alike: from the road name on, without
    spaces or parentheses. One writes "서울특별시 마포구 공덕동 마포대로20길 6-11", another
    "서울특별시 마포구 마포대로20길 6-11" or "서울 마포구 마포대로20길 6-11 (공덕동)"."""
    words = _PARENTHESES.sub(" ", address).split()
    for i, word in enumerate(words):
        if _ROAD_NAME.search(word):
            return "".join(words[i:])
    return "".join(words)
