"""What the kernel does for a pooled PostgreSQL connection whose server vanished silently: the
socket of every connection carries the TCP settings that make it give up (ecosort_common.db)."""

from __future__ import annotations

import os
import socket

import pytest

from ecosort_common.db import TCP_USER_TIMEOUT_MS, create_engine
from ecosort_common.settings import ServiceSettings


@pytest.mark.skipif(not hasattr(socket, "TCP_USER_TIMEOUT"), reason="Linux socket options")
async def test_a_silent_server_is_given_up_within_the_tcp_user_timeout(
    settings: ServiceSettings,
) -> None:
    engine = create_engine(settings.database_url, pool_size=1)
    try:
        async with engine.connect() as conn:
            raw = await conn.get_raw_connection()
            descriptor = raw.driver_connection.fileno()
            # A duplicate: closing our socket object must not close the connection's.
            with socket.socket(fileno=os.dup(descriptor)) as sock:
                user_timeout = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT)
                keepalive = sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)
                idle = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE)
    finally:
        await engine.dispose()
    # Unacknowledged data (a query, the pre-ping) and unanswered keepalive probes end the
    # connection after this long; the kernel's default is about 15 minutes, or never when idle.
    assert user_timeout == TCP_USER_TIMEOUT_MS
    # An idle pooled connection is probed well within a background loop's round (60 s), not
    # after the kernel's two hours, so that it is known dead before a checkout waits on it.
    assert keepalive == 1
    assert idle <= 10
