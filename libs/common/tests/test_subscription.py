"""The process's one pub/sub connection: messages by channel, catching up, and coming back."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

from redis.asyncio import Redis

from ecosort_common.aio import cancel_and_wait
from ecosort_common.settings import ServiceSettings
from ecosort_common.subscription import Subscription


async def _until(condition: Callable[[], bool]) -> None:
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("not within 5 s")


async def test_a_killed_connection_is_noticed_and_resubscribed(settings: ServiceSettings) -> None:
    name = f"test-subscription-{uuid.uuid4().hex[:8]}"
    redis = Redis.from_url(settings.redis_url, decode_responses=True, client_name=name)
    admin = Redis.from_url(settings.redis_url, decode_responses=True)
    channel = f"test:{name}"
    received: list[str] = []
    happened: list[str] = []

    async def caught_up() -> None:
        happened.append("subscribed")

    subscription = Subscription(redis, reconnect_seconds=0.1)
    subscription.add(
        channel,
        received.append,
        on_subscribed=caught_up,
        on_lost=lambda: happened.append("lost"),
    )
    following = asyncio.create_task(subscription.run())
    try:
        await asyncio.wait_for(subscription.subscribed.wait(), 5)
        await admin.publish(channel, "one")
        await _until(lambda: received == ["one"])
        subscriber = [c for c in await admin.client_list() if c["name"] == name and c["sub"] != "0"]
        assert len(subscriber) == 1
        await admin.client_kill_filter(_id=subscriber[0]["id"])
        await _until(lambda: happened == ["subscribed", "lost", "subscribed"])
        assert subscription.live
        await admin.publish(channel, "two")
        await _until(lambda: len(received) == 2)
        assert received == ["one", "two"]
    finally:
        await cancel_and_wait(following)
        await redis.aclose()
        await admin.aclose()
