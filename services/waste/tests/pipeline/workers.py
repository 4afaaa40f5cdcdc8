"""Real Celery worker processes for the worker tests (`celery -A ecosort_waste.worker worker`),
and polling of the database they write to."""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row

READY_TIMEOUT = 60.0


@dataclass
class WorkerProcess:
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def pool_children(self) -> list[int]:
        out = subprocess.run(
            ["ps", "-o", "pid=", "--ppid", str(self.pid)], capture_output=True, text=True
        ).stdout
        return [int(pid) for pid in out.split()]

    def kill_all(self) -> None:
        """kill -9 the worker and its pool: its own process group, which it leads."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.kill(self.pid, signal.SIGTERM)  # warm shutdown: the main process stops its pool
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill_all()


def start_worker(env: dict[str, str], name: str, log_dir: Path) -> WorkerProcess:
    log_path = log_dir / f"{name}.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "ecosort_waste.worker",
                "worker",
                "-Q",
                "analyses",
                "--concurrency",
                "1",
                "--hostname",
                f"{name}@%h",
                "--without-gossip",
                "--without-mingle",
                "--loglevel",
                "INFO",
            ],
            env={**os.environ, **env},
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so a test can kill it whole
        )
    worker = WorkerProcess(process, log_path)
    deadline = time.monotonic() + READY_TIMEOUT
    while " ready." not in worker.log():
        if process.poll() is not None or time.monotonic() > deadline:
            worker.kill_all()
            raise RuntimeError(f"worker {name} did not start:\n{worker.log()[-3000:]}")
        time.sleep(0.1)
    return worker


def sync_url(database_url: str) -> str:
    return database_url.replace("postgresql+psycopg://", "postgresql://")


def insert_analysis(database_url: str, image_key: str, image: bytes, **values: Any) -> uuid.UUID:
    analysis_id = uuid.uuid4()
    columns = {
        "id": analysis_id,
        "owner_id": uuid.uuid4(),
        "status": "queued",
        "progress": 0,
        "image_key": image_key,
        "image_sha256": hashlib.sha256(image).hexdigest(),
        "attempts": 0,
    } | values
    names = ", ".join(columns)
    placeholders = ", ".join(f"%({name})s" for name in columns)
    with psycopg.connect(sync_url(database_url), autocommit=True) as conn:
        conn.execute(f"INSERT INTO analyses ({names}) VALUES ({placeholders})", columns)
    return analysis_id


def analysis_row(database_url: str, analysis_id: uuid.UUID) -> dict[str, Any]:
    with psycopg.connect(sync_url(database_url), row_factory=dict_row) as conn:
        row = conn.execute("SELECT * FROM analyses WHERE id = %s", (analysis_id,)).fetchone()
    assert row is not None
    return row


def wait_for(
    database_url: str, analysis_id: uuid.UUID, timeout: float = 60.0, **expected: Any
) -> dict[str, Any]:
    """Poll until the row has the expected column values; fail with the last row seen."""
    deadline = time.monotonic() + timeout
    while True:
        row = analysis_row(database_url, analysis_id)
        if all(row[column] == value for column, value in expected.items()):
            return row
        if time.monotonic() > deadline:
            raise AssertionError(f"analysis never reached {expected}: {row}")
        time.sleep(0.05)


def outbox_events(database_url: str, analysis_id: uuid.UUID) -> list[dict[str, Any]]:
    with psycopg.connect(sync_url(database_url), row_factory=dict_row) as conn:
        return conn.execute(
            "SELECT event_type, payload FROM outbox WHERE payload->>'analysis_id' = %s",
            (str(analysis_id),),
        ).fetchall()
