"""Live progress of an analysis in Redis: the contract between the pipeline and the API.

For each analysis:
- a hash `waste:analysis:<id>` with the latest status, stage, progress and seq, and the
  attempt (run) whose events it still takes; an event's seq is never below its place in the
  analysis (`least_seq`, from the database's attempt count), so that ids keep rising when
  Redis loses the hash;
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

from ecosort_waste.models import ANALYSIS_STAGES

PROGRESS_CHANNEL = "waste:progress"
EVENT_LOG_MAXLEN = 200
# Long enough for a client to come back to a finished analysis, short enough to clean up.
PROGRESS_TTL_SECONDS = 24 * 3600

TERMINAL_EVENTS: frozenset[str] = frozenset({"completed", "failed"})
# Fields of an event's data mirrored into the state hash.
_STATE_FIELDS = ("status", "stage", "progress")
# Run `a` (the database's `attempts`) takes seqs from (a - 1) * SEQS_PER_RUN: step 0 is the
# hand-over to it (queued again), then its stages, then its final event, so a first run that
# completes has 1 to 5, as a counter would give. The steps leave room for an event published
# out of step (a run given up on, heard again once Redis lost the hash that refused it), which
# takes the next seq instead.
SEQS_PER_RUN = 10
_FINAL_STEP = len(ANALYSIS_STAGES) + 1

# One atomic step: bump seq, update the state hash, append to the log, publish.
# Atomic so two writers can never hand out the same seq or publish out of order.
# The seq is the last one + 1, or the event's place if that is higher: once Redis has lost the
# hash (a restart without persistence, an eviction, its expiry mid-run), a counter would start
# again at 1, below the ids watchers hold, and they would take what follows, the final event
# included, for events they have seen.
# Nothing is published once the hash holds a final status (a run that lost the analysis to
# another may still be reporting stages), nor for a run older than the hash's `attempt`, nor a
# hand-over (re-queue) to a run that is already reporting; the script then answers the latest
# seq instead. A final event is heard whatever its run: the database's conditional writes
# decided it, and a run given up on may still end the analysis there (a photo found missing
# after the reaper re-queued it); refused, the hash would say `queued` for ever. Its run does
# not lower the hash's `attempt`. An empty value removes the field (no stage).
# KEYS: state hash, event stream. ARGV: analysis id, event, data JSON, ttl, maxlen, the run's
# attempt (empty: none), "1" if the event hands over to that run, the event's least seq, then
# field/value pairs for the hash. The published JSON is assembled here because `data` is
# already JSON text; the id is a UUID and the event a fixed word, so nothing needs escaping.
_PUBLISH_SCRIPT = (
    """
local status = redis.call('HGET', KEYS[1], 'status')
if status == 'completed' or status == 'failed' then
  return tonumber(redis.call('HGET', KEYS[1], 'seq') or '0')
end
if ARGV[6] ~= '' then
  local attempt = tonumber(ARGV[6])
  local current = tonumber(redis.call('HGET', KEYS[1], 'attempt') or '0')
  local final = ARGV[2] == 'completed' or ARGV[2] == 'failed'
  if not final and (attempt < current or (ARGV[7] == '1' and attempt == current)) then
    return tonumber(redis.call('HGET', KEYS[1], 'seq') or '0')
  end
  if attempt > current then
    redis.call('HSET', KEYS[1], 'attempt', ARGV[6])
  end
end
local seq = math.max(tonumber(redis.call('HGET', KEYS[1], 'seq') or '0') + 1, tonumber(ARGV[8]))
redis.call('HSET', KEYS[1], 'seq', seq)
for i = 9, #ARGV, 2 do
  if ARGV[i + 1] == '' then
    redis.call('HDEL', KEYS[1], ARGV[i])
  else
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  end
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
    redis: Redis,
    analysis_id: uuid.UUID | str,
    event: str,
    data: dict[str, Any],
    *,
    attempt: int | None = None,
    hands_over: bool = False,
) -> int:
    """Record and broadcast one event; returns its seq (the SSE `id:`). `attempt` is the run
    reporting: an older run than the latest is not heard (its final event is), and the event's
    seq is at least its place in that run (`least_seq`); without one, the seq is the next. With
    `hands_over`, the event passes the analysis to run `attempt`, which must not be reporting
    yet. Refused (see the script), it returns the latest event's seq, which after a final event
    is the final event's."""
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
            "" if attempt is None else str(attempt),
            "1" if hands_over else "",
            str(least_seq(attempt, event, data)),
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
    attempt: int,
    result: dict[str, Any] | None = None,
    error: str | None = None,
) -> int:
    """The terminal event of run `attempt` (the analysis's `attempts` as it ended). Whoever
    sends it (the pipeline, the reaper, a repair after a crash), its data has the same keys as
    the status read: the app reads one shape."""
    data = final_data(status=status, stage=stage, progress=progress, result=result, error=error)
    return await publish_event(redis, analysis_id, status, data, attempt=attempt)


async def publish_requeued(redis: Redis, analysis_id: uuid.UUID | str, *, next_attempt: int) -> int:
    """The analysis waits in the queue again (a retry, or the reaper took it from a lost run):
    no stage, no progress, and no `error`, which the app would read as a failure. From now on
    only `next_attempt` and later runs are heard: the run given up on may still be alive."""
    return await publish_event(
        redis,
        analysis_id,
        "progress",
        {"status": "queued", "progress": 0, "stage": None},
        attempt=next_attempt,
        hands_over=True,
    )


def least_seq(attempt: int | None, event: str, data: dict[str, Any]) -> int:
    """The lowest seq an event of run `attempt` may take: its place in the analysis, above
    every earlier step's, so that it is above any id handed out before it even when Redis lost
    the analysis's hash (see SEQS_PER_RUN). 0 for an event of no run."""
    if attempt is None:
        return 0
    if event in TERMINAL_EVENTS:
        step = _FINAL_STEP
    elif data.get("stage") in ANALYSIS_STAGES:
        step = ANALYSIS_STAGES.index(data["stage"]) + 1
    else:
        step = 0  # the hand-over: queued again, no stage
    return (attempt - 1) * SEQS_PER_RUN + step


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
    """What an event's data sets in the state hash; "" removes a field the data sets to None
    (a re-queued analysis has no stage any more)."""
    return {
        field: "" if data[field] is None else str(data[field])
        for field in _STATE_FIELDS
        if field in data
    }


def merged_state(state: dict[str, str], data: dict[str, Any]) -> dict[str, str]:
    """`state` after an event with `data`, as the publish script leaves the hash."""
    merged = {**state, **state_fields(data)}
    return {field: value for field, value in merged.items() if value != ""}


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


async def last_reached(redis: Redis, analysis_id: uuid.UUID | str) -> tuple[str | None, int | None]:
    """The stage and progress a run last published, which the database does not follow (it
    has the claim's): what an analysis that failed records as reached."""
    state = await read_state(redis, analysis_id)
    live = state.get("progress", "")
    return state.get("stage"), int(live) if live.isdigit() else None


def _decode_entry(fields: dict[Any, Any]) -> ProgressEvent:
    decoded = {_text(key): _text(value) for key, value in fields.items()}
    return ProgressEvent(
        seq=int(decoded["seq"]), event=decoded["event"], data=json.loads(decoded["data"])
    )


def _text(value: str | bytes) -> str:
    # Works whether or not the client was created with decode_responses.
    return value.decode() if isinstance(value, bytes) else value
