"""Address → coordinates through Kakao Local, when this deployment has a Kakao REST API key.
Answers are cached in Redis: addresses do not move, and Kakao's quota is per day."""

from __future__ import annotations

import hashlib
import json
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from redis.asyncio import Redis

from ecosort_common.errors import Problem
from ecosort_common.redis import get_redis
from ecosort_locations.config import Settings
from ecosort_locations.kakao import KakaoLocalClient, KakaoLocalError
from ecosort_locations.schemas import GeocodeItem, GeocodeOut

router = APIRouter(tags=["geocoding"])
CACHE_KEY = "locations:geocode:{digest}"


def _geocoder(request: Request) -> KakaoLocalClient:
    geocoder: KakaoLocalClient | None = getattr(request.app.state, "geocoder", None)
    if geocoder is None:
        raise Problem(
            503,
            "Geocoding is not configured here (KAKAO_REST_API_KEY is not set).",
            title="Geocoding not configured",
        )
    return geocoder


@router.get("/geocode", response_model=GeocodeOut, summary="Find an address's coordinates")
async def geocode(
    request: Request,
    query: Annotated[str, Query(min_length=2, max_length=200, description="a Korean address")],
    geocoder: Annotated[KakaoLocalClient, Depends(_geocoder)],
    redis: Annotated[Redis, Depends(get_redis)],
) -> GeocodeOut:
    settings: Settings = request.app.state.settings
    query = " ".join(query.split())
    key = CACHE_KEY.format(digest=hashlib.sha256(query.encode()).hexdigest()[:32])
    cached = await redis.get(key)
    if cached is not None:
        return GeocodeOut(query=query, items=[GeocodeItem(**i) for i in json.loads(cached)])
    try:
        found = await geocoder.search_address(query)
    except KakaoLocalError as exc:
        headers = {"Retry-After": exc.retry_after} if exc.retry_after else None
        raise Problem(exc.status, exc.detail, title="Geocoding failed", headers=headers) from exc
    items = [item.as_json() for item in found]
    if settings.geocode_cache_seconds:
        await redis.set(
            key, json.dumps(items, ensure_ascii=False), ex=settings.geocode_cache_seconds
        )
    return GeocodeOut(query=query, items=[GeocodeItem(**i) for i in items])
