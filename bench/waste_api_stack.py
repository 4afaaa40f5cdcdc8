"""A throw-away waste API for the benchmarks: its own PostgreSQL database and Redis database,
a local token issuer (JWKS over HTTP), and one uvicorn process of `ecosort_waste.main:app`.

It logs as in production (LOG_LEVEL info, charts/waste/values.yaml): one JSON line per request
from the observability middleware, ~20 µs of the API's CPU each, which a benchmark run at
`warning` would leave out. The lines go to a file, not to the benchmark's terminal."""

from __future__ import annotations

import io
import os
import resource
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from tempfile import TemporaryDirectory

import httpx
from PIL import Image

from ecosort_common.migrations import upgrade
from ecosort_common.testing import (
    TokenIssuer,
    free_port,
    temporary_database,
    temporary_redis_db,
)

API = "/api/v1/waste"


@dataclass
class WasteApi:
    base_url: str
    process: subprocess.Popen[bytes]
    database_url: str
    redis_url: str
    issuer: TokenIssuer
    log_path: Path

    def rss_mb(self, field: str = "VmRSS") -> float:
        """Resident memory of the API process, from /proc (VmRSS, in kB); `VmHWM`: its peak."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError(f"no {field}")

    def cpu_seconds(self) -> float:
        """User + system CPU time the API process has used (from /proc/<pid>/stat)."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def headers(self, user_id: uuid.UUID) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.issuer.token(user_id, lifetime=_HOUR)}"}

    def create_analysis(self, user_id: uuid.UUID, seed: int = 0) -> str:
        buf = io.BytesIO()
        Image.new("RGB", (64, 64), (seed % 256, 0, 0)).save(buf, format="JPEG")
        response = httpx.post(
            f"{self.base_url}{API}/analyses",
            headers=self.headers(user_id),
            files={"image": ("a.jpg", buf.getvalue(), "image/jpeg")},
            timeout=30,
        )
        response.raise_for_status()
        return str(response.json()["id"])


_HOUR = __import__("datetime").timedelta(hours=1)


def _raise_fd_limit() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


@contextmanager
def waste_api(extra_env: dict[str, str] | None = None) -> Iterator[WasteApi]:
    with ExitStack() as stack:
        issuer = TokenIssuer().start()
        stack.callback(issuer.stop)
        database_url = stack.enter_context(temporary_database("bench_waste"))
        redis_url = stack.enter_context(temporary_redis_db())
        data_dir = stack.enter_context(TemporaryDirectory(prefix="ecosort-bench-"))
        upgrade("ecosort_waste", database_url)
        port = free_port()
        env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "JWKS_URL": issuer.jwks_url,
            "JWT_ISSUER": issuer.issuer,
            "JWT_AUDIENCE": issuer.audience,
            "DATA_DIR": data_dir,
            "LOG_LEVEL": "info",  # production's: every request is logged
            **(extra_env or {}),
        }
        command = [
            sys.executable, "-m", "uvicorn", "ecosort_waste.main:app",
            "--host", "127.0.0.1", "--port", str(port),
            "--no-access-log", "--backlog", "4096",
        ]  # fmt: skip
        log_path = Path(stack.enter_context(TemporaryDirectory(prefix="ecosort-bench-log-")))
        log_file = stack.enter_context((log_path / "api.log").open("wb"))
        process = subprocess.Popen(
            command,
            env=env,
            preexec_fn=_raise_fd_limit,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        stack.callback(_stop, process)
        api = WasteApi(
            f"http://127.0.0.1:{port}",
            process,
            database_url,
            redis_url,
            issuer,
            log_path / "api.log",
        )
        _wait_ready(api)
        yield api


def _wait_ready(api: WasteApi) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if api.process.poll() is not None:
            log = api.log_path.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"the API exited with {api.process.returncode}:\n{log}")
        try:
            if httpx.get(f"{api.base_url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError("the API did not become ready within 60 s")


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
