"""An upload's enqueue fails fast against a broker that stopped answering: the API then answers
and leaves the committed analysis to the reaper, instead of holding the upload for the outage."""

from __future__ import annotations

import threading
import time
import uuid

from ecosort_common.testing import silent_server
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
