"""Live progress of an analysis in Redis: the contract between the pipeline and the API.

For each analysis:
- a hash `waste:analysis:<id>` with the latest status, stage, progress and seq;
- an event log, the capped Redis Stream `waste:analysis:<id>:events`, whose entries are
  {seq, event, data} so that an SSE client reconnecting with Last-Event-ID can catch up;
- every event is also PUBLISHed on the one channel `waste:progress` as JSON
  {analysis_id, seq, event, data}, so an API process needs a single subscription for all clients.

The database stays the source of truth; this is the fast path for people watching.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, Literal, cast

from redis.asyncio import Redis

PROGRESS_CHANNEL = "waste:progress"
EVENT_LOG_MAXLEN = 200
# Long enough for a client to come back to a finished analysis, short enough to clean up.
PROGRESS_TTL_SECONDS = 24 * 3600

EventName = Literal["progress", "completed", "failed"]
TERMINAL_EVENTS: frozenset[str] = frozenset({"completed", "failed"})
# Fields of an event's data mirrored into the state hash.
_STATE_FIELDS = ("status", "stage", "progress")

# One atomic step: bump seq, update the state hash, append to the log, publish.
# Atomic so two writers can never hand out the same seq or publish out of order.
# KEYS: state hash, event stream. ARGV: analysis id, event, data JSON, ttl, maxlen, then
# field/value pairs for the hash. The published JSON is assembled here because `data` is
# already JSON text; the id is a UUID and the event a fixed word, so nothing needs escaping.
_PUBLISH_SCRIPT = (
    """
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
for i = 6, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[5], '*',
  'seq', seq, 'event', ARGV[2], 'data', ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[4])
redis.call('PUBLISH', '"""
    + PROGRESS_CHANNEL
    + """', '{"analysis_id":"' .. ARGV[1] .. '","seq":' .. seq ..
  ',"event":"' .. ARGV[2] .. '","data":' .. ARGV[3] .. '}')
return seq
"""
)


@dataclass(frozen=True)
class ProgressEvent:
    seq: int
    event: str
    data: dict[str, Any]


def state_key(analysis_id: uuid.UUID | str) -> str:
    return f"waste:analysis:{analysis_id}"


def events_key(analysis_id: uuid.UUID | str) -> str:
    return f"waste:analysis:{analysis_id}:events"


async def publish_event(
    redis: Redis, analysis_id: uuid.UUID | str, event: EventName, data: dict[str, Any]
) -> int:
    """Record and broadcast one event; returns its seq (the SSE `id:`)."""
    analysis_id = str(uuid.UUID(str(analysis_id)))  # refuse anything but a UUID in the script
    if event not in ("progress", *TERMINAL_EVENTS):
        raise ValueError(f"unknown progress event {event!r}")
    hash_fields = [item for pair in state_fields(data).items() for item in pair]
    # redis-py types asyncio commands as `Awaitable[T] | T`; on an asyncio client it is awaitable.
    seq = await cast(
        Awaitable[str],
        redis.eval(
            _PUBLISH_SCRIPT,
            2,
            state_key(analysis_id),
            events_key(analysis_id),
            analysis_id,
            event,
            json.dumps(data, separators=(",", ":"), default=str),
            str(PROGRESS_TTL_SECONDS),
            str(EVENT_LOG_MAXLEN),
            *hash_fields,
        ),
    )
    return int(seq)


async def publish_final(
    redis: Redis,
    analysis_id: uuid.UUID | str,
    *,
    status: Literal["completed", "failed"],
    stage: str | None,
    progress: int,
    result: dict[str, Any] | None = None,
    error: str | None = None,
) -> int:
    """The terminal event. Whoever sends it (the pipeline, the reaper, a repair after a crash),
    its data has the same keys as the status read: the app reads one shape."""
    data = final_data(status=status, stage=stage, progress=progress, result=result, error=error)
    return await publish_event(redis, analysis_id, status, data)


async def publish_requeued(redis: Redis, analysis_id: uuid.UUID | str) -> int:
    """The analysis waits in the queue again (a retry, or the reaper took it from a lost run):
    no stage, no progress, and no `error`, which the app would read as a failure."""
    return await publish_event(
        redis, analysis_id, "progress", {"status": "queued", "progress": 0, "stage": None}
    )


def final_data(
    *,
    status: str,
    stage: str | None,
    progress: int,
    result: dict[str, Any] | None,
    error: str | None,
) -> dict[str, Any]:
    return {
        "status": status,
        "stage": stage,
        "progress": progress,
        "result": result,
        "error": error,
    }


def state_fields(data: dict[str, Any]) -> dict[str, str]:
    """What an event's data sets in the state hash."""
    return {field: str(data[field]) for field in _STATE_FIELDS if data.get(field) is not None}


async def read_events(
    redis: Redis, analysis_id: uuid.UUID | str, after_seq: int = 0
) -> list[ProgressEvent]:
    """Events with seq > after_seq, oldest first (catch-up after Last-Event-ID)."""
    entries = await redis.xrange(events_key(analysis_id), "-", "+")
    events = [_decode_entry(fields) for _entry_id, fields in entries]
    return [event for event in events if event.seq > after_seq]


async def read_state(redis: Redis, analysis_id: uuid.UUID | str) -> dict[str, str]:
    """The latest {status, stage, progress, seq}; empty when nothing was published (or expired)."""
    raw = await cast(Awaitable[dict[Any, Any]], redis.hgetall(state_key(analysis_id)))
    return {_text(key): _text(value) for key, value in raw.items()}


def _decode_entry(fields: dict[Any, Any]) -> ProgressEvent:
    decoded = {_text(key): _text(value) for key, value in fields.items()}
    return ProgressEvent(
        seq=int(decoded["seq"]), event=decoded["event"], data=json.loads(decoded["data"])
    )


def _text(value: str | bytes) -> str:
    # Works whether or not the client was created with decode_responses.
    return value.decode() if isinstance(value, bytes) else value
