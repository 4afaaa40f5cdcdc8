"""Nearest collection points: a bounding-box prefilter the (lat, lng) index serves, then the
haversine distance in SQL for the few rows left (no PostGIS needed)."""

from __future__ import annotations

import uuid

from sqlalchemy import and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from ecosort_locations.geo import bounding_box, haversine_sql
from ecosort_locations.models import CollectionPoint


async def nearest(
    session: AsyncSession,
    *,
    lat: float,
    lng: float,
    radius_m: float,
    point_type: str | None,
    limit: int,
    after: tuple[float, uuid.UUID] | None = None,
) -> list[tuple[CollectionPoint, float]]:
    """Nearest first, ties by id; `after` is the (distance, id) of the last row already shown."""
    box = bounding_box(lat, lng, radius_m)
    distance = haversine_sql(lat, lng, CollectionPoint.lat, CollectionPoint.lng)
    stmt = (
        select(CollectionPoint, distance.label("distance_m"))
        .where(
            CollectionPoint.lat.between(box.min_lat, box.max_lat),
            CollectionPoint.lng.between(box.min_lng, box.max_lng),
            distance <= radius_m,
        )
        .order_by(distance, CollectionPoint.id)
        .limit(limit)
    )
    if point_type is not None:
        stmt = stmt.where(CollectionPoint.type == point_type)
    if after is not None:
        # Keyset, not offset: a point imported between two pages neither repeats a row nor
        # hides one. The same expression with the same centre gives the same float again, so
        # the row the cursor names compares equal and the id settles ties.
        after_distance, after_id = after
        stmt = stmt.where(
            or_(
                distance > after_distance,
                and_(distance == after_distance, CollectionPoint.id > after_id),
            )
        )
    return [(row[0], float(row[1])) for row in (await session.execute(stmt)).all()]


async def point_by_id(session: AsyncSession, point_id: uuid.UUID) -> CollectionPoint | None:
    return await session.get(CollectionPoint, point_id)


async def counts_by_type(session: AsyncSession) -> dict[str, int]:
    rows = await session.execute(
        select(CollectionPoint.type, func.count()).group_by(CollectionPoint.type)
    )
    return {point_type: count for point_type, count in rows.all()}
