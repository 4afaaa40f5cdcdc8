"""Shapes of the locations API."""

from __future__ import annotations

import uuid
from datetime import date

from pydantic import BaseModel, Field

from ecosort_locations.models import CollectionPoint


class CollectionPointOut(BaseModel):
    id: uuid.UUID
    type: str
    name: str
    address: str
    detail: str | None
    region: str | None
    lat: float
    lng: float
    geocoded: bool = Field(description="coordinates found from the address, not in the source")
    source: str
    source_date: date | None

    @classmethod
    def of(cls, point: CollectionPoint) -> CollectionPointOut:
        return cls.model_validate(point, from_attributes=True)


class NearbyPointOut(CollectionPointOut):
    distance_m: float


class Center(BaseModel):
    lat: float
    lng: float


class NearbyOut(BaseModel):
    items: list[NearbyPointOut] = Field(description="nearest first")
    next_cursor: str | None = Field(
        default=None,
        description="Set while more points exist: pass it as `cursor`, with the same lat, lng, "
        "radius_m and type.",
    )
    center: Center
    radius_m: float
    type: str | None


class PointTypeOut(BaseModel):
    code: str
    name_ko: str
    name_en: str
    categories: list[str] = Field(description="waste category codes these points take")
    count: int


class TypesOut(BaseModel):
    items: list[PointTypeOut]


class GeocodeItem(BaseModel):
    address: str
    road_address: str | None
    lat: float
    lng: float
    region_1depth: str | None
    region_2depth: str | None
    b_code: str | None


class GeocodeOut(BaseModel):
    query: str
    items: list[GeocodeItem]
