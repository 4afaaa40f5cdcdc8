"""What the logs must never carry."""

from __future__ import annotations

import httpx
import pytest

from ecosort_common.logging import configure_logging


@pytest.mark.parametrize("level", ["info", "debug"])
def test_outbound_request_urls_with_credentials_stay_out_of_the_logs(
    capsys: pytest.CaptureFixture[str], level: str
) -> None:
    # Roboflow takes its API key in the query string; httpx logs each request's URL at INFO.
    configure_logging(level)
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json={}))
    with httpx.Client(transport=transport) as client:
        client.post("https://detect.roboflow.com/waste/3?api_key=SECRET-KEY")
    assert "SECRET-KEY" not in capsys.readouterr().out
