"""An upload's enqueue fails fast against a broker that stopped answering: the API then answers
and leaves the committed analysis to the reaper, instead of holding the upload for the outage.
The worker's own Redis client (its pipeline and its reaper) gives up on such a server too."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid

import pytest
from redis.exceptions import TimeoutError as RedisTimeout

from ecosort_common import redis as redis_module
from ecosort_common.testing import silent_server
from ecosort_waste import worker
from ecosort_waste.config import Settings
from ecosort_waste.queue import BROKER_SOCKET_TIMEOUT_SECONDS, configure_celery, send_analysis


def test_a_publish_to_a_hung_broker_gives_up_in_seconds(settings: Settings) -> None:
    outcome: list[BaseException | None] = []

    def publish(celery_url: str) -> None:
        celery = configure_celery(settings.model_copy(update={"redis_url": celery_url}))
        try:
            send_analysis(celery, uuid.uuid4())
            outcome.append(None)
        except Exception as exc:
            outcome.append(exc)

    with silent_server() as address:
        started = time.monotonic()
        # A daemon thread: without the timeouts the publish never returns, and must not keep
        # the test run from ending.
        thread = threading.Thread(target=publish, args=(f"redis://{address}/0",), daemon=True)
        thread.start()
        thread.join(timeout=4 * BROKER_SOCKET_TIMEOUT_SECONDS)
        waited = time.monotonic() - started
    assert not thread.is_alive(), "the publish still hangs"
    assert outcome and outcome[0] is not None  # refused, for the reaper to send again
    assert waited < 2 * BROKER_SOCKET_TIMEOUT_SECONDS + 3  # two attempts and a short pause


async def test_the_workers_redis_gives_up_on_a_server_gone_silent(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No request deadline bounds the reaper: without a socket timeout, one command on a
    connection gone silent held it, and with it every stuck analysis, for good."""
    monkeypatch.setattr(redis_module, "BACKGROUND_SOCKET_TIMEOUT_SECONDS", 1.0)
    with silent_server() as address:
        redis = worker.worker_redis(
            settings.model_copy(update={"redis_url": f"redis://{address}/0"})
        )
        started = time.monotonic()
        with pytest.raises(RedisTimeout):
            await asyncio.wait_for(redis.get("waste:anything"), timeout=15)
        waited = time.monotonic() - started
        await redis.aclose()
    assert waited < 10
