"""A service whose DATABASE_URL points nowhere still starts: alive, not ready, no crash loop.

The service runs as the stack runs it (uvicorn, the launcher's environment table), with only
DATABASE_URL pointing at a port where nothing listens.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ecosort_devstack.config import StackConfig, find_repo_root
from ecosort_devstack.env import service_env
from ecosort_devstack.readiness import http_ok, wait_until
from ecosort_devstack.testservers import free_port

REPO = find_repo_root(Path(__file__).parent)
SERVICE = "users"


@pytest.fixture(scope="module")
def service_without_database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    home = tmp_path_factory.mktemp("no-database")
    config = StackConfig(repo=REPO, home=home)
    nowhere = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/ecosort_{SERVICE}"
    env = service_env(
        config,
        SERVICE,
        database_url=nowhere,
        redis_url=os.environ["ECOSORT_TEST_REDIS_URL"],
    )
    port = free_port()
    log = home / "service.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", f"ecosort_{SERVICE}.main:app", "--port", str(port)],
            env=env,
            cwd=REPO,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(http_ok(f"{url}/healthz"), what=SERVICE, timeout=90, process=process, log=log)
        yield url
        assert process.poll() is None, f"{SERVICE} exited: see {log}"
    finally:
        process.terminate()
        process.wait(timeout=15)


def test_liveness_is_200_without_a_database(service_without_database: str) -> None:
    assert httpx.get(f"{service_without_database}/healthz").status_code == 200


def test_readiness_is_503_problem_naming_the_database(service_without_database: str) -> None:
    for _ in range(2):  # asked twice, a second apart: the answer is stable, nothing restarts
        response = httpx.get(f"{service_without_database}/readyz", timeout=10)
        assert response.status_code == 503
        assert response.headers["content-type"].startswith("application/problem+json")
        body = response.json()
        assert "database" in body["detail"]
        assert body["dependencies"]["database"] is False
        time.sleep(1)
    assert httpx.get(f"{service_without_database}/healthz").status_code == 200
