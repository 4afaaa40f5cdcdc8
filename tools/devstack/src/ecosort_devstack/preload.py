"""The five APIs start from one forkserver that has imported their common libraries once.

Each service process spends most of its start-up importing the same libraries (FastAPI,
SQLAlchemy, psycopg, redis-py, pydantic, uvicorn, ecosort_common): about 3 CPU-seconds each, most
of a cold start on two cores. A `multiprocessing` forkserver imports them once; every service is
then forked from it and imports only its own code. Each child still is its own process, in its
own session (process group), with its own environment and log file, and is stopped by PID like
any other process of the stack.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.forkserver
import os
import signal
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

PRELOAD = (
    "uvicorn",
    "uvloop",
    "httptools",
    "fastapi",
    "sqlalchemy.ext.asyncio",
    "psycopg",
    "redis.asyncio",
    "pydantic_settings",
    "structlog",
    "prometheus_client",
    "httpx",
    "joserfc.jwt",
    "ecosort_common.app",
    "ecosort_common.pagination",
)

_context = multiprocessing.get_context("forkserver")
_context.set_forkserver_preload(list(PRELOAD))
_start_lock = threading.Lock()


def _serve(module: str, port: int, env: Mapping[str, str], cwd: str, log_path: str) -> None:
    """Runs in the forked child: a session of its own, its log, its environment, uvicorn."""
    os.setsid()
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    import uvicorn

    uvicorn.run(
        f"{module}:app",
        host="127.0.0.1",
        port=port,
        access_log=False,  # the gateway writes the access log; services log JSON
        timeout_graceful_shutdown=3,  # SSE streams must not hold up a stop
    )
    sys.stdout.flush()


class ForkedProcess:
    """The part of `subprocess.Popen` the launcher uses, for a forkserver child."""

    def __init__(self, process: Any) -> None:
        self._process = process

    @property
    def pid(self) -> int:
        return int(self._process.pid)

    @property
    def returncode(self) -> int | None:
        code = self._process.exitcode
        return None if code is None else int(code)

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int | None:
        self._process.join(timeout)
        return self.returncode


def start_forkserver() -> None:
    """Starts the forkserver, ignoring SIGINT; from the main thread, before any service.

    It is the one process of the stack left in the terminal's process group, so Ctrl-C reaches
    it too. Its main loop ignores SIGINT, but not its preload imports, the first seconds of
    `up`: there Ctrl-C ended it with a traceback across the launcher's orderly stop.
    """
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # inherited through its exec
    try:
        multiprocessing.forkserver.ensure_running()
    finally:
        signal.signal(signal.SIGINT, previous)


def start_api(
    module: str, port: int, env: Mapping[str, str], cwd: Path, log: Path
) -> ForkedProcess:
    process = _context.Process(
        target=_serve, args=(module, port, dict(env), str(cwd), str(log)), name=module
    )
    with _start_lock:  # one connection to the forkserver at a time
        process.start()
    return ForkedProcess(process)
