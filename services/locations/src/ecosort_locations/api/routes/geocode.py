"""Address → coordinates through Kakao Local, when this deployment has a Kakao REST API key.
Answers are cached in Redis: addresses do not move, and Kakao's quota is per day. Every new query
spends that quota, so only signed-in users may ask, each a limited number of times a minute."""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from redis.asyncio import Redis

from ecosort_common.errors import Problem
from ecosort_common.openapi import retry_later
from ecosort_common.ratelimit import RateLimiter
from ecosort_common.redis import get_redis
from ecosort_common.security import Principal, current_principal
from ecosort_locations.config import Settings
from ecosort_locations.kakao import KakaoLocalClient, KakaoLocalError
from ecosort_locations.schemas import GeocodeItem, GeocodeOut

router = APIRouter(tags=["geocoding"])
CACHE_KEY = "locations:geocode:{digest}"
GEOCODE_ERRORS: dict[int | str, dict[str, Any]] = {
    429: retry_later("This user's lookups of new addresses are over the limit of a minute."),
    502: {"description": "Kakao Local failed or refused this service's API key."},
    503: retry_later(
        "Kakao's quota is used up (with Retry-After), or geocoding is not configured here "
        "(without: it will not come back by waiting)."
    ),
    504: {"description": "Kakao Local did not answer in time."},
}


def _geocoder(request: Request) -> KakaoLocalClient:
    geocoder: KakaoLocalClient | None = getattr(request.app.state, "geocoder", None)
    if geocoder is None:
        raise Problem(
            503,
            "Geocoding is not configured here (KAKAO_REST_API_KEY is not set).",
            title="Geocoding not configured",
        )
    return geocoder


@router.get(
    "/geocode",
    response_model=GeocodeOut,
    responses=GEOCODE_ERRORS,
    summary="Find an address's coordinates",
)
async def geocode(
    request: Request,
    principal: Annotated[Principal, Depends(current_principal)],
    query: Annotated[
        str,
        # Two characters besides spaces: a query of spaces would reach Kakao empty (its 400).
        Query(
            min_length=2,
            max_length=200,
            pattern=r"\S\s*\S",
            description="a Korean address (at least two characters besides spaces)",
        ),
    ],
    redis: Annotated[Redis, Depends(get_redis)],
) -> GeocodeOut:
    """Kakao Local address search, for a signed-in user (a bearer token). Answers are cached;
    a query not in the cache counts against the user's `GEOCODE_RATE_LIMIT_PER_MINUTE`, and over
    it the answer is 429 with Retry-After."""
    # Asked here, not as a dependency: FastAPI runs dependencies before it reports a malformed
    # query, which would then get this 503 instead of its 422.
    geocoder = _geocoder(request)
    settings: Settings = request.app.state.settings
    query = " ".join(query.split())
    key = CACHE_KEY.format(digest=hashlib.sha256(query.encode()).hexdigest()[:32])
    cached = await redis.get(key)
    if cached is not None:
        return GeocodeOut(query=query, items=[GeocodeItem(**i) for i in json.loads(cached)])
    # Counted only here: a cached answer costs Kakao's daily quota nothing.
    limiter = RateLimiter(redis, "locations", window_seconds=60)
    await limiter.hit("geocoding", str(principal.user_id), settings.geocode_rate_limit_per_minute)
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
