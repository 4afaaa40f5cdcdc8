"""Background loops: bounding a round, and stopping them for certain."""

from __future__ import annotations

import asyncio
from typing import Any

import structlog

log = structlog.get_logger("ecosort.aio")

# The longest one round of a background loop (the outbox relay, the event consumers, the waste
# reaper) may take. PostgreSQL has no client-side timeout and no request deadline bounds these
# loops: a round that takes longer waits on a connection gone silent (a failover, a half-open
# TCP connection), and is given up so that the next one starts on a fresh connection.
BACKGROUND_ROUND_SECONDS = 60.0


async def cancel_and_wait(*tasks: asyncio.Task[Any], recheck_seconds: float = 1.0) -> None:
    """Cancel until done. Python 3.11's `asyncio.wait_for` drops a cancellation that arrives as
    the work it waits for completes, and libraries use it inside their own calls (redis-py
    around every send when given a socket timeout: it held the services' shutdown in tests).
    A loop that lost its cancellation would run on, and whoever waits for it would wait for
    ever. A task still running after `recheck_seconds` is cancelled again: long enough for the
    cleanup a cancellation starts (closing a connection) not to be cut short as a rule.
    Exceptions are retrieved, not raised: the caller is stopping the tasks, not running them."""
    pending = set(tasks)
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=recheck_seconds)
        if pending:
            log.warning("tasks_cancelled_again", tasks=sorted(t.get_name() for t in pending))
    await asyncio.gather(*tasks, return_exceptions=True)
