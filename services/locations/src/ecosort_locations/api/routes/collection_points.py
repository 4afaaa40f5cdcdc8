"""Collection points: nearest search, one point, and the kinds of point."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from pydantic import Field, TypeAdapter
from sqlalchemy.ext.asyncio import AsyncSession

from ecosort_common.db import get_session
from ecosort_common.errors import Problem
from ecosort_common.pagination import decode_cursor_of, encode_cursor_of
from ecosort_locations import search
from ecosort_locations.point_types import POINT_TYPES
from ecosort_locations.schemas import (
    Center,
    CollectionPointOut,
    NearbyOut,
    NearbyPointOut,
    PointTypeOut,
    TypesOut,
)

router = APIRouter(tags=["collection points"])
SessionDep = Annotated[AsyncSession, Depends(get_session)]
MAX_RADIUS_M = 20_000  # beyond a city's width "nearest" stops meaning walking distance
MAX_LIMIT = 100
PointType = Annotated[
    str | None,
    Query(
        alias="type",
        pattern="^(" + "|".join(POINT_TYPES) + ")$",
        description=f"one of {', '.join(POINT_TYPES)}",
    ),
]


# A cursor is the exact (unrounded) distance and id of the last point shown, bound to the
# search it belongs to: a distance from another centre, radius or type would skip or repeat rows.
_POSITION = TypeAdapter(tuple[Annotated[float, Field(ge=0, allow_inf_nan=False)], uuid.UUID])


@router.get(
    "/collection-points",
    response_model=NearbyOut,
    summary="Collection points near a place",
    description="Nearest first, each with `distance_m`. Cursor-paginated: while `next_cursor` is "
    "set, pass it back as `cursor` with the same `lat`, `lng`, `radius_m` and `type` for the next "
    "`limit` points. A malformed cursor, or one from another search, is a 400 problem.",
)
async def nearby(
    session: SessionDep,
    lat: Annotated[float, Query(ge=-90, le=90, description="WGS84 latitude")],
    lng: Annotated[float, Query(ge=-180, le=180, description="WGS84 longitude")],
    radius_m: Annotated[float, Query(gt=0, le=MAX_RADIUS_M)] = 1000,
    point_type: PointType = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 20,
    cursor: Annotated[
        str | None,
        Query(max_length=200, description="`next_cursor` of the previous page of this search"),
    ] = None,
) -> NearbyOut:
    # float(): the default radius is the int 1000, a given one (1000, 1000.0) a float; both are
    # one search, the answer says 1000.0, and a cursor must page on whichever the client sends.
    query = [lat, lng, float(radius_m), point_type]
    after = decode_cursor_of(cursor, _POSITION, query=query) if cursor else None
    # One point more than the page shows, to know whether another page exists.
    found = await search.nearest(
        session,
        lat=lat,
        lng=lng,
        radius_m=radius_m,
        point_type=point_type,
        limit=limit + 1,
        after=after,
    )
    page = found[:limit]
    next_cursor = (
        encode_cursor_of([page[-1][1], str(page[-1][0].id)], query=query)
        if len(found) > limit
        else None
    )
    return NearbyOut(
        items=[
            NearbyPointOut(
                **CollectionPointOut.of(point).model_dump(), distance_m=round(distance, 1)
            )
            for point, distance in page
        ],
        next_cursor=next_cursor,
        center=Center(lat=lat, lng=lng),
        radius_m=radius_m,
        type=point_type,
    )


@router.get("/collection-points/{point_id}", response_model=CollectionPointOut, summary="One point")
async def one_point(point_id: uuid.UUID, session: SessionDep) -> CollectionPointOut:
    point = await search.point_by_id(session, point_id)
    if point is None:
        raise Problem(404, f"No collection point {point_id}.", title="Collection point not found")
    return CollectionPointOut.of(point)


@router.get("/types", response_model=TypesOut, summary="Kinds of collection point")
async def types(session: SessionDep) -> TypesOut:
    counts = await search.counts_by_type(session)
    return TypesOut(
        items=[
            PointTypeOut(
                code=t.code,
                name_ko=t.name_ko,
                name_en=t.name_en,
                categories=list(t.categories),
                count=counts.get(t.code, 0),
            )
            for t in POINT_TYPES.values()
        ]
    )
