"""Progress over Server-Sent Events: one Redis subscription per process, fanned out to clients.

The pipeline publishes every event on the single channel ``waste:progress`` and appends it to
the analysis's event log (see ``progress.py``). ``ProgressHub`` listens on the process's one
subscription (ecosort_common.subscription) and hands each message to the mailboxes of the
clients watching that analysis.
A client first replays the log after its Last-Event-ID, then follows live messages; a gap in
seq (a dropped message, a Redis reconnect, or seqs skipping ahead at a re-queue or an early end:
progress.SEQS_PER_RUN) is filled from the log, so no event is lost.
Memory per open stream is what limits a process (5,000 streams in 300 MB): hence a mailbox
rather than a queue, one generator, and ``ProgressResponse``'s single task per stream.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog
from cachetools import TTLCache
from redis.asyncio import Redis
from sse_starlette import EventSourceResponse
from starlette.types import Receive, Scope, Send

from ecosort_common.subscription import Subscription
from ecosort_waste.progress import (
    PROGRESS_CHANNEL,
    TERMINAL_EVENTS,
    ProgressEvent,
    merged_state,
    read_events,
)

log = structlog.get_logger(__name__)

CLIENT_BACKLOG = 32
# Sentinel telling a client to re-read the log: its mailbox overflowed or Redis reconnected.
RESYNC = ProgressEvent(seq=-1, event="resync", data={})
# What `final_state` answers for an analysis that no longer exists (its owner's account was
# deleted): the stream ends, and the client's reconnection is told 404.
GONE = ProgressEvent(seq=-2, event="gone", data={})
# Live states of analyses polled in this process: a few hundred bytes each.
LIVE_STATES = 20_000
LIVE_STATE_SECONDS = 600
RECENT_SEQS = 100_000
RECENT_SEQ_SECONDS = 60


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
        if self._waiter is not None:
            _wake(self._waiter)

    async def take(self, wait_seconds: float) -> list[ProgressEvent]:
        """Everything received so far, waiting up to ``wait_seconds`` for an event (an empty
        list when none came). A timer on the waiter itself, not ``asyncio.timeout``:
        no timeout object and no cancellation per wait, at thousands of waiting streams."""
        if not self._events:
            loop = asyncio.get_running_loop()
            self._waiter = waiter = loop.create_future()
            timer = loop.call_later(wait_seconds, _wake, waiter)
            try:
                await waiter
            finally:
                timer.cancel()
                self._waiter = None
        events, self._events = self._events, []
        return events


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


@dataclass(slots=True)
class _LiveState:
    seq: int
    fields: dict[str, str]  # the state hash: seq, status, stage, progress


class ProgressHub:
    """The process's listener on ``waste:progress`` (on its one shared subscription).

    It feeds the open event streams, and it keeps the live state of the analyses this process
    was asked about, so that a status poll needs no Redis round trip: an analysis's state is
    read from Redis once, then kept current from the events that follow. That is exact only
    while no event is missed, hence the checks on seq (a gap drops the state) and the
    generation (a lost subscription drops them all).
    """

    def __init__(self, subscription: Subscription) -> None:
        self._subscription = subscription
        self._watchers: dict[str, set[Mailbox]] = {}
        self._states: TTLCache[str, _LiveState] = TTLCache(LIVE_STATES, LIVE_STATE_SECONDS)
        # The latest seq published for each analysis, of the last minute: a state read from
        # Redis just before an event must not be kept once that event has gone by.
        self._recent_seqs: TTLCache[str, int] = TTLCache(RECENT_SEQS, RECENT_SEQ_SECONDS)
        self.generation = 0
        # Set when the server shuts down: every stream ends, so that uvicorn can stop.
        self.closing = False
        subscription.add(
            PROGRESS_CHANNEL, self._dispatch, on_subscribed=self._resubscribed, on_lost=self._lost
        )

    @property
    def watcher_count(self) -> int:
        return sum(len(mailboxes) for mailboxes in self._watchers.values())

    def state_of(self, analysis_id: str) -> dict[str, str] | None:
        """The analysis's live state if this process knows it for sure, else None."""
        if not self._subscription.live:
            return None
        state = self._states.get(analysis_id)
        return state.fields if state is not None else None

    def keep_state(self, analysis_id: str, fields: dict[str, str], generation: int) -> None:
        """Keep a state read from Redis; ``generation`` is the hub's from before the read."""
        if generation != self.generation or not self._subscription.live:
            return
        seq = int(fields.get("seq") or 0)
        if self._recent_seqs.get(analysis_id, 0) > seq:
            return  # an event newer than the read went by: the next poll reads again
        known = self._states.get(analysis_id)
        if known is None or known.seq < seq:
            self._states[analysis_id] = _LiveState(seq, {**fields, "seq": str(seq)})

    async def _resubscribed(self) -> None:
        self._forget_all()

    def _lost(self) -> None:
        self._forget_all()

    def _forget_all(self) -> None:
        """Events may have been missed: anything published meanwhile is in the logs and the
        state hashes, so streams re-read their log and polls read Redis again."""
        self.generation += 1
        self._states.clear()
        self._resync_all()

    async def end_streams_at_exit(self) -> None:
        """Wait for the server to start shutting down, then end every stream.

        uvicorn waits for open responses before it stops, and a stream only ends with its
        analysis. sse-starlette would watch for the exit in a task of each stream; one watcher
        for the process, with sse-starlette's own detection (``_listen_for_exit_signal``: it
        also finds the uvicorn server that started before this module was imported), does it
        for all of them."""
        await EventSourceResponse._listen_for_exit_signal()
        self.end_streams()

    def end_streams(self) -> None:
        self.closing = True
        self._resync_all()  # wakes every stream, which sees `closing` and ends

    def _dispatch(self, raw: str) -> None:
        try:
            payload = json.loads(raw)
            analysis_id = str(payload["analysis_id"])
            event = ProgressEvent(int(payload["seq"]), str(payload["event"]), payload["data"])
        except (ValueError, KeyError, TypeError):
            log.warning("progress_message_malformed")
            return
        for mailbox in self._watchers.get(analysis_id, ()):
            mailbox.offer(event)
        self._recent_seqs[analysis_id] = max(event.seq, self._recent_seqs.get(analysis_id, 0))
        known = self._states.get(analysis_id)
        if known is None or event.seq <= known.seq:
            return
        if event.seq == known.seq + 1:
            known.seq = event.seq
            known.fields = {**merged_state(known.fields, event.data), "seq": str(event.seq)}
        else:
            del self._states[analysis_id]  # a gap: read it from Redis again

    def _resync_all(self) -> None:
        for mailboxes in self._watchers.values():
            for mailbox in mailboxes:
                mailbox.offer(RESYNC)

    def join(self, analysis_id: str) -> Mailbox:
        mailbox = Mailbox()
        self._watchers.setdefault(analysis_id, set()).add(mailbox)
        if self.closing:
            mailbox.offer(RESYNC)
        return mailbox

    def leave(self, analysis_id: str, mailbox: Mailbox) -> None:
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
    final_state: Callable[[], Awaitable[ProgressEvent | None]],
    known_final: bool,
    heartbeat_seconds: float,
    resync_seconds: float,
    retry_milliseconds: int,
) -> AsyncIterator[dict[str, Any]]:
    """The SSE fields of one analysis's events with seq > after_seq, ending after the terminal
    one, with a heartbeat comment whenever ``heartbeat_seconds`` pass without an event.

    It yields fields rather than events so that it can be the response's body itself: one
    generator per open stream instead of two.
    ``final_state()`` answers from the database when the analysis has finished: it covers a
    log that expired or a final event that was never published. It answers GONE for an
    analysis deleted meanwhile, which ends the stream.
    ``known_final`` says the caller already saw the analysis finished; if it did not, the
    database is not asked again up front (a finish after that point is in the log).
    ``resync_seconds`` bounds how long a lost pub/sub message can go unnoticed.
    ``retry_milliseconds`` is the stream's first frame, on its own: an EventSource learns its
    reconnection delay at once, even when it is dropped before any event.
    """
    yield {"retry": retry_milliseconds}  # sse-starlette's ServerSentEvent encodes `retry:`
    last = after_seq
    # Join first, then read the log: an event published in between arrives on both paths and
    # the seq check below drops the duplicate.
    mailbox = hub.join(analysis_id)
    try:
        pending = await read_events(redis, analysis_id, last)
        if known_final and not any(event.event in TERMINAL_EVENTS for event in pending):
            # Finished, but the log has no end (expired, or the final event never published):
            # what it has, then the end from the database, rather than waiting for a resync.
            final = await final_state()
            if final is GONE:
                return
            if final is not None:
                pending = [*pending, final]
        quiet_seconds = 0.0
        while True:
            for event in pending:
                if event.seq <= last:
                    continue
                yield sse_fields(event)
                last = event.seq
                if event.event in TERMINAL_EVENTS:
                    return
            # The heartbeat lives here rather than in a ping task of its own: one task fewer
            # per open stream.
            received = await mailbox.take(heartbeat_seconds)
            if hub.closing:
                return  # the client comes back with Last-Event-ID, to a server that is up
            if not received:
                yield {"comment": "heartbeat"}
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
                    final = await final_state()
                    if final is GONE:
                        return
                    if final is not None:
                        yield sse_fields(final)
                        return
            else:
                pending = received
    finally:
        hub.leave(analysis_id, mailbox)


def encode_data(event: ProgressEvent) -> str:
    return json.dumps(event.data, separators=(",", ":"), ensure_ascii=False, default=str)


def sse_fields(event: ProgressEvent) -> dict[str, Any]:
    return {"id": str(event.seq), "event": event.event, "data": encode_data(event)}


class ProgressResponse(EventSourceResponse):
    """sse-starlette's response with one task per stream instead of a task group of three.

    ``EventSourceResponse`` runs the body, a disconnect listener and a shutdown listener as
    anyio tasks (each with a cancel scope and an event): about 15 kB of a stream's 45 kB. Here
    the body runs in the request's own task and a plain asyncio task listens for the client
    leaving; shutdown is the hub's (``ProgressHub.end_streams_at_exit``) and heartbeats come
    from the body (``follow``), so there is no ping task either. Encoding, headers, HEAD,
    send timeouts and the body's cleanup stay sse-starlette's (pinned in uv.lock: this
    relies on its ``_stream_response`` and ``_listen_for_disconnect``).
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"].upper() == "HEAD":
            await super().__call__(scope, receive, send)
            return
        streaming = asyncio.current_task()
        assert streaming is not None
        done = False
        client_left = False

        def stop_streaming(_: asyncio.Task[None]) -> None:
            nonlocal client_left
            if not done:
                client_left = True
                streaming.cancel()

        listener = asyncio.create_task(self._listen_for_disconnect(receive))
        listener.add_done_callback(stop_streaming)
        try:
            await self._stream_response(send)
        except asyncio.CancelledError:
            # Our own cancel (the client left) ends the response; anyone else's goes on up.
            if not client_left or streaming.uncancel() > 0:
                raise
        finally:
            done = True
            listener.cancel()
        if listener.done() and not listener.cancelled() and (error := listener.exception()):
            raise error
        if self.background is not None:
            await self.background()
