"""A deadline on the service's own time: a request held by a store that hangs gets a 503 to
retry instead of waiting for as long as the store does.

PostgreSQL gives a client no way to bound a statement's wait on a connection that has gone
silent (a hung server, a failover that blackholes the old address), and the gateway's read
timeout is long (two minutes for waste, whose event streams it must not cut). So the service
bounds itself, well within that: the clock runs only while the request is the service's to
answer, from the moment the app stops waiting for the client (its body read, or never asked
for) until the response starts. A slow upload is the network's time, not the service's; an
event stream, once started, may run for as long as it likes.

The 503 goes out once the app has stopped: psycopg, cancelled mid-query, asks the server to
cancel it and waits up to 10 s more before it closes the connection, so a hung PostgreSQL is
answered up to ~10 s after the deadline. Work handed to a thread (run_in_threadpool) runs on
to its end; only what would have followed it is cut. A streamed answer's own work (the users'
export) runs after the response started, outside the deadline.
"""

from __future__ import annotations

import asyncio

import structlog
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ecosort_common.errors import STORE_RETRY_AFTER_SECONDS, problem_response

log = structlog.get_logger("ecosort.deadline")
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class RequestDeadlineMiddleware:
    def __init__(self, app: ASGIApp, *, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        clock = _Clock(self.seconds, receive, send)
        try:
            async with clock.deadline:
                await self.app(scope, clock.receive, clock.send)
        except TimeoutError:
            if clock.responding or not clock.deadline.expired():
                raise  # the app's own, a 500 like any other error it lets through
            log.warning("request_deadline_exceeded", path=scope["path"], seconds=self.seconds)
            detail = "This service did not finish the request in time; retry in a few seconds."
            if scope["method"] not in SAFE_METHODS:
                # Its commit may have gone through with only the answer lost.
                detail = (
                    "This service did not finish the request in time, and it may have taken "
                    "effect; retry in a few seconds, with the same Idempotency-Key where the "
                    "endpoint takes one."
                )
            response = problem_response(
                Request(scope),
                503,
                detail=detail,
                headers={"Retry-After": str(STORE_RETRY_AFTER_SECONDS)},
            )
            await response(scope, receive, send)


class _Clock:
    """The request's deadline, stopped while the app waits for the client and for good once the
    response starts. Slots and bound methods, not closures: an event stream keeps this for its
    whole life, and a process holds thousands of them."""

    __slots__ = ("_receive", "_seconds", "_send", "deadline", "responding")

    def __init__(self, seconds: float, receive: Receive, send: Send) -> None:
        self.deadline = asyncio.timeout(seconds)
        self.responding = False
        self._seconds = seconds
        self._receive = receive
        self._send = send

    async def receive(self) -> Message:
        if self.responding or self.deadline.expired():  # no deadline any more
            return await self._receive()
        self.deadline.reschedule(None)
        try:
            return await self._receive()
        finally:
            if not self.responding and not self.deadline.expired():
                self.deadline.reschedule(asyncio.get_running_loop().time() + self._seconds)

    async def send(self, message: Message) -> None:
        if not self.responding and message["type"] == "http.response.start":
            self.responding = True
            if not self.deadline.expired():  # a cancellation lost on the way: let the answer out
                self.deadline.reschedule(None)
        await self._send(message)
