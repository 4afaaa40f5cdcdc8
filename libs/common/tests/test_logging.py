"""What the logs must never carry, and the one shape every line has."""

from __future__ import annotations

import json
import logging

import httpx
import pytest
import sqlalchemy.exc
import structlog
import uvicorn
from sqlalchemy import text

from ecosort_common.db import create_engine
from ecosort_common.logging import configure_logging
from ecosort_common.settings import ServiceSettings


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


def test_the_standard_librarys_loggers_write_the_same_json_lines(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Celery's, uvicorn's and Alembic's own lines, as a log pipeline parses every other line.
    # uvicorn.run sets up its own loggers first (uvicorn.Config does), then imports the app.
    uvicorn.Config("ecosort_demo.main:app", access_log=False)
    configure_logging("info")
    with structlog.contextvars.bound_contextvars(request_id="rid-stdlib"):
        logging.getLogger("celery.worker").warning("Task %s received", "analyse")
        logging.getLogger("uvicorn.error").info("Started server process [%d]", 7)
        try:
            raise ValueError("boom")
        except ValueError:
            logging.getLogger("uvicorn.error").exception("Exception in ASGI application")
    written = capsys.readouterr()
    assert not written.err
    received, started, failed = (json.loads(line) for line in written.out.splitlines())
    assert received["event"] == "Task analyse received"
    assert (started["event"], started["logger"]) == ("Started server process [7]", "uvicorn.error")
    assert (received["level"], received["logger"]) == ("warning", "celery.worker")
    assert received["request_id"] == "rid-stdlib" and received["timestamp"]
    assert failed["level"] == "error" and "ValueError: boom" in failed["exception"]


def test_uvicorns_access_log_writes_json_lines_too(capsys: pytest.CaptureFixture[str]) -> None:
    # The chart runs `uvicorn ecosort_<svc>.main:app` with its access log on: uvicorn gives that
    # logger a plain-text handler on stdout of its own, one line per request (probes too).
    uvicorn.Config("ecosort_demo.main:app")
    configure_logging("info")
    logging.getLogger("uvicorn.access").info(
        '%s - "%s %s HTTP/%s" %d', "10.0.0.1:5", "GET", "/health", "1.1", 200
    )
    written = capsys.readouterr()
    assert not written.err
    (line,) = written.out.splitlines()
    access = json.loads(line)
    assert (access["logger"], access["event"]) == (
        "uvicorn.access",
        '10.0.0.1:5 - "GET /health HTTP/1.1" 200',
    )


def test_uvicorns_access_log_stays_off_when_turned_off() -> None:
    # The chart and the launcher run uvicorn with --no-access-log: the service's own JSON line
    # is the access log. uvicorn writes its line whenever the logger has a handler up its tree.
    uvicorn.Config("ecosort_demo.main:app", access_log=False)
    configure_logging("info")
    configure_logging("info")  # every app built in a process configures it again
    assert not logging.getLogger("uvicorn.access").hasHandlers()


async def test_a_failed_statements_error_does_not_carry_its_parameters(
    settings: ServiceSettings,
) -> None:
    # Such errors are logged whole: an event handler's failure (`repr`), an unexpected 500's
    # traceback; their parameters are the users' data.
    engine = create_engine(settings.database_url, pool_size=1)
    try:
        async with engine.connect() as connection:
            with pytest.raises(sqlalchemy.exc.DBAPIError) as failed:
                # Refused for something else than the parameter (the server's own message may
                # quote a value it refuses, which no client setting hides).
                await connection.execute(
                    text("SELECT CAST(:email AS text), 1 / 0"), {"email": "alice@example.com"}
                )
    finally:
        await engine.dispose()
    assert "division by zero" in str(failed.value)
    assert "alice@example.com" not in str(failed.value) + repr(failed.value)
