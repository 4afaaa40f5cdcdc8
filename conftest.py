"""Test servers for the whole suite: the machine's PostgreSQL and Redis, or embedded ones.

The fixtures of `ecosort_common.testing` read ECOSORT_TEST_POSTGRES_URL and
ECOSORT_TEST_REDIS_URL. When 127.0.0.1:5432 / 127.0.0.1:6379 (or the URLs already in those
variables) do not answer, the controller process starts embedded servers once, before the
pytest-xdist workers exist, and exports their URLs so every worker inherits them.
"""

from __future__ import annotations

import os
import socket
from typing import Any
from urllib.parse import urlsplit

import pytest

from ecosort_common.settings import async_database_url
from ecosort_common.testing import DEFAULT_POSTGRES, DEFAULT_REDIS, POSTGRES_ENV, REDIS_ENV

_STARTED_KEY = pytest.StashKey[Any]()


def _answers(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection(
            (parts.hostname or "127.0.0.1", parts.port or default_port), timeout=0.5
        ):
            return True
    except OSError:
        return False


def pytest_configure(config: pytest.Config) -> None:
    if hasattr(config, "workerinput"):
        return  # an xdist worker: the controller has set the environment already
    postgres_url = os.environ.setdefault(POSTGRES_ENV, async_database_url(DEFAULT_POSTGRES))
    redis_url = os.environ.setdefault(REDIS_ENV, DEFAULT_REDIS)
    need_postgres = not _answers(postgres_url, 5432)
    need_redis = not _answers(redis_url, 6379)
    if not (need_postgres or need_redis):
        return
    from ecosort_devstack.testservers import start_test_servers

    servers = start_test_servers(need_postgres=need_postgres, need_redis=need_redis)
    config.stash[_STARTED_KEY] = servers
    if servers.postgres_url:
        os.environ[POSTGRES_ENV] = servers.postgres_url
    if servers.redis_url:
        os.environ[REDIS_ENV] = servers.redis_url


def pytest_report_header(config: pytest.Config) -> str:
    started = config.stash.get(_STARTED_KEY, None)
    origin = "embedded (started for this run)" if started else "already running"
    return f"test servers ({origin}): {os.environ.get(POSTGRES_ENV)} {os.environ.get(REDIS_ENV)}"


def pytest_unconfigure(config: pytest.Config) -> None:
    servers = config.stash.get(_STARTED_KEY, None)
    if servers is not None:
        servers.stop()
