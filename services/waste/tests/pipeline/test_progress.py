"""progress.py against a real Redis: the hash, the event log and the one pub/sub channel."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest
from redis.asyncio import Redis

from ecosort_waste import progress


async def test_events_update_state_log_and_channel(redis: Redis) -> None:
    analysis_id = uuid.uuid4()
    pubsub = redis.pubsub()
    await pubsub.subscribe(progress.PROGRESS_CHANNEL)
    await pubsub.get_message(timeout=1)  # the subscribe confirmation

    first = await progress.publish_event(
        redis, analysis_id, "progress", {"status": "processing", "stage": "load", "progress": 10}
    )
    second = await progress.publish_event(
        redis, analysis_id, "completed", {"status": "completed", "progress": 100, "result": {}}
    )

    assert (first, second) == (1, 2)
    state = await progress.read_state(redis, analysis_id)
    # "stage" keeps its last value: the completed event did not carry one.
    assert state == {"status": "completed", "stage": "load", "progress": "100", "seq": "2"}
    published: list[dict[str, Any]] = []
    while len(published) < 2:
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=2)
        assert message is not None, "event not published on waste:progress"
        body = json.loads(message["data"])
        if body["analysis_id"] == str(analysis_id):  # other test runs share the channel
            published.append(body)
    assert published[0] == {
        "analysis_id": str(analysis_id),
        "seq": 1,
        "event": "progress",
        "data": {"status": "processing", "stage": "load", "progress": 10},
    }
    assert published[1]["event"] == "completed" and published[1]["seq"] == 2
    await pubsub.aclose()  # type: ignore[attr-defined]


async def test_read_events_resumes_after_a_seq_and_log_expires(redis: Redis) -> None:
    analysis_id = uuid.uuid4()
    for percent in (10, 40, 70):
        await progress.publish_event(redis, analysis_id, "progress", {"progress": percent})

    resumed = await progress.read_events(redis, analysis_id, after_seq=1)

    assert [(e.seq, e.data["progress"]) for e in resumed] == [(2, 40), (3, 70)]
    assert await progress.read_events(redis, analysis_id, after_seq=3) == []
    ttl = await redis.ttl(progress.events_key(analysis_id))
    assert 0 < ttl <= progress.PROGRESS_TTL_SECONDS
    assert 0 < await redis.ttl(progress.state_key(analysis_id)) <= progress.PROGRESS_TTL_SECONDS


async def test_concurrent_publishers_never_share_a_seq(redis: Redis) -> None:
    analysis_id = uuid.uuid4()
    seqs = await asyncio.gather(
        *(progress.publish_event(redis, analysis_id, "progress", {"n": n}) for n in range(50))
    )
    assert sorted(seqs) == list(range(1, 51))
    assert [e.seq for e in await progress.read_events(redis, analysis_id)] == list(range(1, 51))


async def test_the_log_is_capped(redis: Redis) -> None:
    analysis_id = uuid.uuid4()
    for n in range(progress.EVENT_LOG_MAXLEN * 2):
        await progress.publish_event(redis, analysis_id, "progress", {"n": n})
    # MAXLEN ~ trims by whole nodes: bounded, a little above the cap at most.
    assert await redis.xlen(progress.events_key(analysis_id)) < progress.EVENT_LOG_MAXLEN * 1.6


async def test_refuses_unknown_events_and_ids(redis: Redis) -> None:
    with pytest.raises(ValueError):
        await progress.publish_event(redis, uuid.uuid4(), "exploded", {})  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        await progress.publish_event(redis, '"injected', "progress", {})
