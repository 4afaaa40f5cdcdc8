"""What the pipeline benchmarks share: real Celery worker processes of `ecosort_waste.worker`, a
stand-in for the recycling service (answers from memory, so its own speed is not measured, but
the service's own answer bodies, which the result document, the database row and the final
event carry), the shared photos, and CPU accounting of a process tree from /proc."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from ecosort_common.testing import free_port

PHOTOS = Path(
    os.environ.get(
        "WASTE_PHOTOS_DIR", Path(__file__).resolve().parents[2] / "shared/data/waste-images"
    )
)


def shared_photos(count: int) -> list[bytes]:
    """`count` photos, the six classes in turn (TrashNet JPEGs, 512×384, as a phone would send
    after the app's own downscaling); a class with too few photos starts over."""
    classes = sorted(p for p in PHOTOS.iterdir() if p.is_dir())
    files = [sorted(c.glob("*.jpg")) for c in classes]
    picks = ((files[i % len(files)], i // len(files)) for i in range(count))
    return [photos[n % len(photos)].read_bytes() for photos, n in picks]


def add_classifier_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tta",
        action="store_true",
        help="force test-time augmentation on (default: as the head says)",
    )
    parser.add_argument(
        "--cascade",
        action="store_true",
        help="CLASSIFIER_CASCADE: Lite2 only where Lite0 is not sure (default: both networks)",
    )


def classifier_env(args: argparse.Namespace) -> dict[str, str]:
    """The worker's classifier settings from `add_classifier_options`' flags."""
    return {
        "CLASSIFIER_PROVIDER": "local",
        **({"CLASSIFIER_TEST_TIME_AUGMENTATION": "true"} if args.tta else {}),
        **({"CLASSIFIER_CASCADE": "true"} if args.cascade else {}),
    }


def classifier_description(args: argparse.Namespace) -> str:
    return (
        f"test-time augmentation: {'on' if args.tta else 'as the head says'}, "
        f"networks: {'cascade (Lite2 where Lite0 is not sure)' if args.cascade else 'both'}"
    )


def category_bodies() -> dict[str, bytes]:
    """What recycling answers for each category: the bodies its catalog builds from the
    knowledge files it loads (1.4-2.2 kB each, with the rules, their sources and the regional
    rules), not a few placeholder fields: the worker keeps the whole answer in the result."""
    from ecosort_recycling.catalog import Catalog
    from ecosort_recycling.knowledge_base import read_knowledge_files

    catalog = Catalog(read_knowledge_files(), checksum="bench")
    return {
        code: json.dumps(
            body.model_dump(mode="json"), ensure_ascii=False, separators=(",", ":")
        ).encode()
        for code, body in catalog.category_bodies.items()
    }


@contextmanager
def recycling_stand_in() -> Iterator[str]:
    """GET /api/v1/recycling/categories/{code} answered from memory, like recycling would."""
    bodies = category_bodies()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            body = bodies.get(self.path.rsplit("/", 1)[-1])
            if body is None:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class Worker:
    process: subprocess.Popen[bytes]
    log_path: Path

    def tree(self) -> list[int]:
        out = subprocess.run(
            ["ps", "-o", "pid=", "--ppid", str(self.process.pid)], capture_output=True, text=True
        ).stdout
        return [self.process.pid, *(int(p) for p in out.split())]

    def cpu_seconds(self, *, main_only: bool = False) -> float:
        """User + system CPU of the worker and its pool processes (or its main process) so far."""
        total = 0
        for pid in [self.process.pid] if main_only else self.tree():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except FileNotFoundError:
                continue
            total += int(fields[11]) + int(fields[12])
        return total / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)  # warm shutdown of the pool
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


@contextmanager
def celery_worker(
    env: dict[str, str], *, concurrency: int, log_dir: Path, pool: str = "prefork"
) -> Iterator[Worker]:
    log_path = log_dir / f"worker-{len(list(log_dir.iterdir()))}.log"
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
                str(concurrency),
                "--pool",
                pool,
                "--without-gossip",
                "--without-mingle",
                "--loglevel",
                "WARNING",
                "--hostname",
                f"bench-{os.getpid()}-{time.monotonic_ns()}@%h",
            ],
            env={**os.environ, **env},
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    worker = Worker(process, log_path)
    try:
        _wait_ready(worker, concurrency, pool)
        yield worker
    finally:
        worker.stop()


def _wait_ready(worker: Worker, concurrency: int, pool: str) -> None:
    """Up when every pool process exists and has loaded the model (its CPU use settles)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if worker.process.poll() is not None:
            raise RuntimeError(f"worker exited:\n{worker.log_path.read_text()[-3000:]}")
        if len(worker.tree()) == (1 if pool == "solo" else concurrency + 1):
            before = worker.cpu_seconds()
            time.sleep(0.5)
            if worker.cpu_seconds() - before < 0.05:
                return
        time.sleep(0.2)
    raise RuntimeError("worker not ready within 120 s")


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]
