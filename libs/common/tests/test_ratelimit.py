"""The shared fixed-window rate limit, against the real Redis."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable

import pytest
from redis.asyncio import Redis

from ecosort_common.errors import Problem
from ecosort_common.ratelimit import RateLimiter
from ecosort_common.redis import create_redis
from ecosort_common.settings import ServiceSettings

WINDOW = 60
WINDOW_START = WINDOW * 28_333_334.0  # a window's first instant (late 2023)


@pytest.fixture
async def redis(settings: ServiceSettings) -> AsyncIterator[Redis]:
    client = create_redis(settings.redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Callable[[float], None]:
    """Sets the time the limiter sees: a real window boundary mid-test would reset its counts."""

    def set_to(now: float) -> None:
        monkeypatch.setattr(time, "time", lambda: now)

    return set_to


@pytest.fixture
def namespace() -> str:
    return f"test-{uuid.uuid4().hex[:8]}"  # this test's keys only, whatever ran before


@pytest.mark.parametrize(
    ("into_window", "retry_after"), [(0.0, 60), (17.25, 43), (59.5, 1)], ids=str
)
async def test_the_hit_after_the_limit_is_429_until_the_window_ends(
    redis: Redis,
    clock: Callable[[float], None],
    namespace: str,
    into_window: float,
    retry_after: int,
) -> None:
    clock(WINDOW_START + into_window)
    limiter = RateLimiter(redis, namespace, window_seconds=WINDOW)
    for _ in range(3):
        await limiter.hit("sign-in", "ip:192.0.2.1", 3)
    with pytest.raises(Problem) as refused:
        await limiter.hit("sign-in", "ip:192.0.2.1", 3)
    assert refused.value.status == 429
    assert refused.value.headers == {"Retry-After": str(retry_after)}
    assert refused.value.detail == (
        f"Too many sign-in requests (at most 3 in 60 s); try again in {retry_after} s."
    )


async def test_keys_scopes_and_namespaces_are_counted_apart(
    redis: Redis, clock: Callable[[float], None], namespace: str
) -> None:
    clock(WINDOW_START + 5)
    limiter = RateLimiter(redis, namespace, window_seconds=WINDOW)
    await limiter.hit("feedback", "alice", 1)
    with pytest.raises(Problem):
        await limiter.hit("feedback", "alice", 1)
    await limiter.hit("feedback", "bob", 1)
    await limiter.hit("geocoding", "alice", 1)
    await RateLimiter(redis, f"{namespace}-other", window_seconds=WINDOW).hit(
        "feedback", "alice", 1
    )


async def test_a_counter_expires_and_the_next_window_starts_again(
    redis: Redis, clock: Callable[[float], None], namespace: str
) -> None:
    clock(WINDOW_START + 30)
    limiter = RateLimiter(redis, namespace, window_seconds=WINDOW)
    await limiter.hit("refresh", "user:1", 1)
    with pytest.raises(Problem):
        await limiter.hit("refresh", "user:1", 1)
    counters = await redis.keys(f"{namespace}:*")
    assert counters == [f"{namespace}:ratelimit:refresh:user:1:28333334"]
    # At least the rest of its window (30 s), and not much more than a window.
    assert WINDOW - 30 <= await redis.ttl(counters[0]) <= WINDOW + 1

    clock(WINDOW_START + WINDOW)
    await limiter.hit("refresh", "user:1", 1)
