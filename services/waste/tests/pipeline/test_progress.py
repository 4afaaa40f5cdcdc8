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


async def test_nothing_is_published_after_the_final_event(redis: Redis) -> None:
    """A run that lost the analysis to another may still be reporting stages: once the final
    event is out, watchers must not see "processing" again, nor a second final event."""
    analysis_id = uuid.uuid4()
    stage = {"status": "processing", "stage": "load", "progress": 5}
    await progress.publish_event(redis, analysis_id, "progress", stage, attempt=1)
    final = await progress.publish_final(
        redis, analysis_id, status="completed", stage="save", progress=100, attempt=1, result={}
    )
    late = {"status": "processing", "stage": "guide", "progress": 70}
    late_seq = await progress.publish_event(redis, analysis_id, "progress", late, attempt=2)
    repeated = await progress.publish_final(
        redis, analysis_id, status="completed", stage="save", progress=100, attempt=1, result={}
    )

    assert final == late_seq == repeated == 5  # the final event's seq, for a reconnection
    assert (await progress.read_state(redis, analysis_id))["status"] == "completed"
    assert [e.seq for e in await progress.read_events(redis, analysis_id)] == [1, 5]


async def test_a_run_given_up_on_is_not_heard_and_its_stage_is_gone(redis: Redis) -> None:
    analysis_id = uuid.uuid4()
    lost = {"status": "processing", "stage": "guide", "progress": 70}
    await progress.publish_event(redis, analysis_id, "progress", lost, attempt=1)
    await progress.publish_requeued(redis, analysis_id, next_attempt=2)

    state = await progress.read_state(redis, analysis_id)
    assert state == {"status": "queued", "progress": "0", "seq": "10", "attempt": "2"}
    assert await progress.publish_event(redis, analysis_id, "progress", lost, attempt=1) == 10
    claimed = {"status": "processing", "stage": "load", "progress": 5}
    assert await progress.publish_event(redis, analysis_id, "progress", claimed, attempt=2) == 11
    events = await progress.read_events(redis, analysis_id)
    assert [(e.seq, e.data["stage"]) for e in events] == [(3, "guide"), (10, None), (11, "load")]
    # A re-queue that comes late, after the run it hands over to has started, is not heard.
    assert await progress.publish_requeued(redis, analysis_id, next_attempt=2) == 11
    assert (await progress.read_state(redis, analysis_id))["status"] == "processing"


async def test_the_final_event_of_a_run_given_up_on_is_heard(redis: Redis) -> None:
    """The database took the failure of run 1 after the progress was handed over to run 2 (the
    run found its photo missing): the end is the end, whichever run reports it, and the hash
    still takes run 2's events only."""
    analysis_id = uuid.uuid4()
    await progress.publish_requeued(redis, analysis_id, next_attempt=2)
    failed = await progress.publish_final(
        redis, analysis_id, status="failed", stage="load", progress=5, attempt=1, error="gone"
    )

    assert failed == 11
    state = await progress.read_state(redis, analysis_id)
    assert (state["status"], state["attempt"]) == ("failed", "2")


async def test_ids_never_go_backwards_when_redis_loses_the_analysis(redis: Redis) -> None:
    """An id is the event's place in the analysis, from the run's attempt (the database's) and
    its step, so the ids after a lost hash and log (a restart without persistence, an eviction)
    go on above those handed out before, which watchers hold as their Last-Event-ID."""
    analysis_id = uuid.uuid4()

    def stage(name: str, value: int) -> dict[str, Any]:
        return {"status": "processing", "stage": name, "progress": value}

    async def lose_it() -> None:
        await redis.delete(progress.state_key(analysis_id), progress.events_key(analysis_id))

    load, classify = stage("load", 5), stage("classify", 20)
    assert await progress.publish_event(redis, analysis_id, "progress", load, attempt=1) == 1
    assert await progress.publish_event(redis, analysis_id, "progress", classify, attempt=1) == 2
    await lose_it()  # mid-run
    guide = stage("guide", 70)
    assert await progress.publish_event(redis, analysis_id, "progress", guide, attempt=1) == 3
    await lose_it()  # between runs
    assert await progress.publish_requeued(redis, analysis_id, next_attempt=2) == 10
    assert await progress.publish_event(redis, analysis_id, "progress", load, attempt=2) == 11
    await lose_it()  # before the end
    final = await progress.publish_final(
        redis, analysis_id, status="failed", stage="load", progress=5, error="x", attempt=2
    )
    assert final == 15
    assert [e.seq for e in await progress.read_events(redis, analysis_id)] == [15]


def test_a_hub_keeps_the_state_as_the_hash_has_it() -> None:
    known = {"status": "processing", "stage": "guide", "progress": "70"}
    requeued = {"status": "queued", "stage": None, "progress": 0}
    assert progress.merged_state(known, requeued) == {"status": "queued", "progress": "0"}
