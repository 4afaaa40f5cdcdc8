"""Progress over Server-Sent Events: one Redis subscription per process, fanned out to clients.

The pipeline publishes every event on the single channel ``waste:progress`` and appends it to
the analysis's event log (see ``progress.py``). ``ProgressHub`` holds the process's only
subscription and hands each message to the queues of the clients watching that analysis.
A client first replays the log after its Last-Event-ID, then follows live messages; a gap in
seq (a dropped message, a Redis reconnect) is filled from the log, so no event is lost.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from typing import Any

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from ecosort_waste.progress import (
    PROGRESS_CHANNEL,
    TERMINAL_EVENTS,
    ProgressEvent,
    read_events,
)

log = structlog.get_logger(__name__)

CLIENT_BACKLOG = 32
# Sentinel telling a client to re-read the log: its mailbox overflowed or Redis reconnected.
RESYNC = ProgressEvent(seq=-1, event="resync", data={})
# Yielded by `follow` when nothing happened for a heartbeat interval: send an SSE comment.
HEARTBEAT = ProgressEvent(seq=-1, event="heartbeat", data={})
ProgressStream = AsyncIterator[ProgressEvent]


class Mailbox:
    """A client's inbox: a list and one future to wake it. Far lighter than an asyncio.Queue
    (four deques and an Event), which matters at thousands of open streams."""

    __slots__ = ("_events", "_waiter")

    def __init__(self) -> None:
        self._events: list[ProgressEvent] = []
        self._waiter: asyncio.Future[None] | None = None

    def offer(self, event: ProgressEvent) -> None:
        if len(self._events) >= CLIENT_BACKLOG:
            # A slow client: drop what it has not read; the log has it all.
            self._events = [RESYNC]
        else:
            self._events.append(event)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def take(self) -> list[ProgressEvent]:
        """Everything received so far, waiting for at least one event."""
        while not self._events:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        events, self._events = self._events, []
        return events


class ProgressHub:
    def __init__(self, redis: Redis, *, reconnect_seconds: float = 1.0) -> None:
        self._redis = redis
        self._reconnect_seconds = reconnect_seconds
        self._watchers: dict[str, set[Mailbox]] = {}
        self.subscribed = asyncio.Event()

    @property
    def watcher_count(self) -> int:
        return sum(len(mailboxes) for mailboxes in self._watchers.values())

    async def run(self) -> None:
        """Keep the subscription alive for the life of the process."""
        while True:
            try:
                await self._listen()
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                log.warning("progress_subscription_lost", error=str(exc))
            self.subscribed.clear()
            self._resync_all()  # anything published while we were away is in the logs
            await asyncio.sleep(self._reconnect_seconds)

    async def _listen(self) -> None:
        pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(PROGRESS_CHANNEL)
            self.subscribed.set()
            self._resync_all()
            async for message in pubsub.listen():
                if message.get("type") == "message":
                    self._dispatch(message["data"])
        finally:
            with suppress(RedisError, OSError):
                await pubsub.aclose()

    def _dispatch(self, raw: str | bytes) -> None:
        try:
            payload = json.loads(raw)
            analysis_id = str(payload["analysis_id"])
            event = ProgressEvent(int(payload["seq"]), str(payload["event"]), payload["data"])
        except (ValueError, KeyError, TypeError):
            log.warning("progress_message_malformed")
            return
        for mailbox in self._watchers.get(analysis_id, ()):
            mailbox.offer(event)

    def _resync_all(self) -> None:
        for mailboxes in self._watchers.values():
            for mailbox in mailboxes:
                mailbox.offer(RESYNC)

    @asynccontextmanager
    async def watch(self, analysis_id: str) -> AsyncIterator[Mailbox]:
        mailbox = Mailbox()
        self._watchers.setdefault(analysis_id, set()).add(mailbox)
        try:
            yield mailbox
        finally:
            mailboxes = self._watchers.get(analysis_id)
            if mailboxes is not None:
                mailboxes.discard(mailbox)
                if not mailboxes:
                    del self._watchers[analysis_id]


async def follow(
    hub: ProgressHub,
    redis: Redis,
    analysis_id: str,
    *,
    after_seq: int,
    final_state: Callable[[int], Awaitable[ProgressEvent | None]],
    known_final: bool,
    heartbeat_seconds: float,
    resync_seconds: float,
) -> ProgressStream:
    """Events of one analysis with seq > after_seq, ending after the terminal one, with
    ``HEARTBEAT`` markers whenever ``heartbeat_seconds`` pass without one.

    ``final_state(last_seq)`` answers from the database (as seq last_seq + 1) when the analysis
    has finished: it covers a log that expired or a final event that was never published.
    ``known_final`` says the caller already saw the analysis finished; if it did not, the
    database is not asked again up front (a finish after that point is in the log).
    ``resync_seconds`` bounds how long a lost pub/sub message can go unnoticed.
    """
    last = after_seq
    async with hub.watch(analysis_id) as mailbox:
        # Watch first, then read the log: an event published in between arrives on both paths
        # and the seq check below drops the duplicate.
        pending = await read_events(redis, analysis_id, last)
        if not pending and known_final:
            final = await final_state(last)
            if final is not None:
                yield final
                return
        quiet_seconds = 0.0
        while True:
            for event in pending:
                if event.seq <= last:
                    continue
                yield event
                last = event.seq
                if event.event in TERMINAL_EVENTS:
                    return
            try:
                # The heartbeat lives here rather than in a ping task of its own: one task
                # fewer per open stream. asyncio.timeout, unlike wait_for, adds no task either.
                async with asyncio.timeout(heartbeat_seconds):
                    received = await mailbox.take()
            except TimeoutError:
                yield HEARTBEAT
                quiet_seconds += heartbeat_seconds
                if quiet_seconds < resync_seconds:
                    pending = []
                    continue
                received = [RESYNC]
            quiet_seconds = 0.0
            # Pub/sub delivers in order, so a gap shows on the first event received.
            if RESYNC in received or received[0].seq > last + 1:
                pending = await read_events(redis, analysis_id, last)
                if not pending and RESYNC in received:
                    final = await final_state(last)
                    pending = [final] if final is not None else []
            else:
                pending = received


def encode_data(event: ProgressEvent) -> str:
    return json.dumps(event.data, separators=(",", ":"), ensure_ascii=False, default=str)


def sse_fields(event: ProgressEvent) -> dict[str, Any]:
    if event is HEARTBEAT:
        return {"comment": "heartbeat"}
    return {"id": str(event.seq), "event": event.event, "data": encode_data(event)}
