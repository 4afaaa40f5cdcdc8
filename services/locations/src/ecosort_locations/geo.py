"""Distances on the Earth: haversine in Python (import checks) and in SQL (search), plus the
bounding box that lets the database skip far rows before computing any distance."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func

EARTH_RADIUS_M = 6_371_008.8  # mean radius (IUGG)
METRES_PER_DEGREE_LAT = math.pi * EARTH_RADIUS_M / 180
# South Korea with its islands (Marado to the DMZ, Baengnyeongdo to Dokdo), with a margin.
KOREA_LAT = (33.0, 38.7)
KOREA_LNG = (124.5, 132.0)


def in_korea(lat: float, lng: float) -> bool:
    return KOREA_LAT[0] <= lat <= KOREA_LAT[1] and KOREA_LNG[0] <= lng <= KOREA_LNG[1]


def haversine_m(lat1: float, lng1: float, lat2: float, lng2: float) -> float:
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    a = (
        math.sin((phi2 - phi1) / 2) ** 2
        + math.cos(phi1) * math.cos(phi2) * math.sin(math.radians(lng2 - lng1) / 2) ** 2
    )
    return 2 * EARTH_RADIUS_M * math.asin(math.sqrt(min(1.0, a)))


@dataclass(frozen=True)
class BoundingBox:
    min_lat: float
    max_lat: float
    min_lng: float
    max_lng: float


def bounding_box(lat: float, lng: float, radius_m: float) -> BoundingBox:
    """Every point within radius_m of (lat, lng) lies inside this box (a slight over-cover)."""
    dlat = radius_m / METRES_PER_DEGREE_LAT
    # Meridians converge towards the poles: a degree of longitude shrinks with cos(latitude).
    # Use the latitude of the box edge nearest a pole so the box never under-covers.
    edge = min(89.9, abs(lat) + dlat)
    dlng = min(180.0, dlat / math.cos(math.radians(edge)))
    return BoundingBox(lat - dlat, lat + dlat, lng - dlng, lng + dlng)


def haversine_sql(lat: float, lng: float, lat_col: Any, lng_col: Any) -> Any:
    """Distance in metres from a fixed point to each row, as a SQL expression."""
    half_dlat = func.radians(lat_col - lat) / 2
    half_dlng = func.radians(lng_col - lng) / 2
    a = func.power(func.sin(half_dlat), 2) + math.cos(math.radians(lat)) * func.cos(
        func.radians(lat_col)
    ) * func.power(func.sin(half_dlng), 2)
    return 2 * EARTH_RADIUS_M * func.asin(func.sqrt(func.least(1.0, a)))
