"""Grounded feedback: how to dispose of a category (and item), for a signed-in person."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from redis.asyncio import Redis

from ecosort_common.openapi import retry_later
from ecosort_common.ratelimit import RateLimiter
from ecosort_common.redis import get_redis
from ecosort_common.security import Principal, current_principal
from ecosort_recycling.catalog import Catalog, get_catalog
from ecosort_recycling.config import Settings
from ecosort_recycling.feedback import answer_feedback
from ecosort_recycling.schemas import FeedbackIn, FeedbackOut

router = APIRouter(prefix="/feedback", tags=["feedback"])
RATE_LIMITED: dict[int | str, dict[str, Any]] = {
    429: retry_later("This user's feedback requests are over the limit of a minute.")
}


@router.post(
    "",
    response_model=FeedbackOut,
    responses=RATE_LIMITED,
    summary="How to dispose of it, with sources",
)
async def post_feedback(
    body: FeedbackIn,
    request: Request,
    principal: Annotated[Principal, Depends(current_principal)],
    catalog: Annotated[Catalog, Depends(get_catalog)],
    redis: Annotated[Redis, Depends(get_redis)],
) -> FeedbackOut:
    settings: Settings = request.app.state.settings
    limiter = RateLimiter(redis, "recycling", window_seconds=60)
    await limiter.hit("feedback", str(principal.user_id), settings.feedback_rate_limit_per_minute)
    return await answer_feedback(
        body,
        user_id=principal.user_id,
        catalog=catalog,
        redis=redis,
        settings=settings,
        model=request.app.state.llm,
    )
