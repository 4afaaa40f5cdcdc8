"""Upload → completed with the local model: 10 concurrent clients, each uploading a photo and
following its event stream until the analysis is completed, one after another.

    uv run --frozen python bench/waste_upload_to_completed.py [--clients 10] [--uploads 30]
        [--warm-up 5] [--worker-processes 2]

A real stack on this machine: one uvicorn process of the waste API (its own PostgreSQL and
Redis databases, tokens from a local issuer), one Celery worker (`--worker-processes` pool
processes, the local model), and a stand-in for the recycling service. Latency is measured by
the client from sending `POST /api/v1/waste/analyses` to receiving the `completed` event on
`GET …/analyses/{id}/events`: upload checks and sanitising, the commit, the queue, the four
stages, the save and the event's way back. Goal (issue 3): p50 <= 150 ms, p95 <= 400 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
import machine
from waste_api_stack import API, WasteApi, waste_api
from waste_worker_stack import (
    Worker,
    add_classifier_options,
    celery_worker,
    classifier_description,
    classifier_env,
    percentile,
    recycling_stand_in,
    shared_photos,
)


@dataclass(frozen=True)
class Upload:
    """A photo's multipart body, encoded before the clock starts: a phone builds it on its own
    CPU, and here that work would only take CPU time from the stack under test."""

    body: bytes
    content_type: str

    @classmethod
    def of(cls, photo: bytes) -> Upload:
        request = httpx.Request(
            "POST", "http://bench/", files={"image": ("photo.jpg", photo, "image/jpeg")}
        )
        return cls(request.read(), request.headers["content-type"])


async def upload_and_follow(
    client: httpx.AsyncClient, api: WasteApi, upload: Upload, headers: dict[str, str]
) -> float:
    """Seconds from the upload to the `completed` event."""
    started = time.perf_counter()
    response = await client.post(
        f"{api.base_url}{API}/analyses",
        headers={**headers, "content-type": upload.content_type},
        content=upload.body,
    )
    response.raise_for_status()
    events_url = api.base_url + response.json()["links"]["events"]
    finished: float | None = None
    async with client.stream("GET", events_url, headers=headers) as stream:
        async for line in stream.aiter_lines():
            if finished is None and line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
                if event == "failed":
                    raise RuntimeError("analysis failed")
                if event == "completed":
                    finished = time.perf_counter()
        # Read to the stream's end (the server closes it after the final event) so that the
        # connection goes back to the pool: leaving early made every stream a new connection.
    if finished is None:
        raise RuntimeError("the event stream ended without a final event")
    return finished - started


async def run_clients(
    api: WasteApi, clients: int, uploads_ready: list[Upload], warm_up: int
) -> list[float]:
    """Latencies of the measured uploads; each client's first `warm_up` are not counted."""
    per_client = len(uploads_ready) // clients
    latencies: list[float] = []
    limits = httpx.Limits(max_connections=clients * 2)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:

        async def one_client(index: int) -> None:
            # One user per client, signed in once: the app reuses its access token until it
            # expires, so the API verifies each token's signature once and then remembers it.
            headers = api.headers(uuid.uuid4())
            for n in range(per_client):
                upload = uploads_ready[index * per_client + n]
                latency = await upload_and_follow(client, api, upload, headers)
                if n >= warm_up:
                    latencies.append(latency)

        await asyncio.gather(*(one_client(i) for i in range(clients)))
    return latencies


def cpu_split(api: WasteApi, worker: Worker) -> dict[str, float]:
    """CPU seconds so far: on two shared cores this, not the wall clock, says where time goes."""
    times = os.times()
    return {
        "API": api.cpu_seconds(),
        "worker pool": worker.cpu_seconds() - worker.cpu_seconds(main_only=True),
        "worker consumer": worker.cpu_seconds(main_only=True),
        "client and recycling stand-in": times.user + times.system,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--uploads", type=int, default=30, help="measured, per client")
    parser.add_argument(
        "--warm-up",
        type=int,
        default=5,
        help="uploads per client before the measured ones (connections, caches, prepared "
        "statements: the first ~50 uploads of a fresh stack are ~20 ms slower)",
    )
    parser.add_argument("--worker-processes", type=int, default=os.cpu_count() or 1)
    add_classifier_options(parser)
    args = parser.parse_args()

    prefix = f"bench-{uuid.uuid4().hex[:8]}:"
    with (
        tempfile.TemporaryDirectory(prefix="ecosort-bench-") as data_dir,
        recycling_stand_in() as recycling_url,
    ):
        shared_env = {
            "DATA_DIR": data_dir,
            "RECYCLING_URL": recycling_url,
            "CELERY_KEY_PREFIX": prefix,
            "LOG_LEVEL": "info",  # production's (charts/waste/values.yaml)
        }
        with waste_api(shared_env) as api:
            worker_env = shared_env | {
                "DATABASE_URL": api.database_url,
                "REDIS_URL": api.redis_url,
                **classifier_env(args),
            }
            log_dir = Path(data_dir) / "worker-logs"
            log_dir.mkdir()
            with celery_worker(
                worker_env, concurrency=args.worker_processes, log_dir=log_dir
            ) as worker:
                # Built before the clock and the CPU counters start, as `Upload` says.
                photos = shared_photos(args.clients * (args.warm_up + args.uploads))
                uploads_ready = [Upload.of(photo) for photo in photos]
                before = cpu_split(api, worker)
                started = time.perf_counter()
                latencies = asyncio.run(run_clients(api, args.clients, uploads_ready, args.warm_up))
                elapsed = time.perf_counter() - started
                used = {k: v - before[k] for k, v in cpu_split(api, worker).items()}

    ms = [value * 1000 for value in latencies]
    analyses = args.clients * (args.uploads + args.warm_up)
    print(f"machine: {machine.describe()}")
    print(
        f"clients: {args.clients}, uploads: {len(ms)}, worker processes: "
        f"{args.worker_processes}, {classifier_description(args)}"
    )
    print(f"throughput: {analyses / elapsed:.1f} analyses/s")
    print(
        "CPU per analysis (warm-up included; PostgreSQL and Redis not counted): "
        + ", ".join(f"{name} {1000 * seconds / analyses:.1f} ms" for name, seconds in used.items())
    )
    print(
        f"upload -> completed: p50 {percentile(ms, 0.5):.0f} ms, p95 {percentile(ms, 0.95):.0f} ms,"
        f" p99 {percentile(ms, 0.99):.0f} ms, max {max(ms):.0f} ms"
    )


if __name__ == "__main__":
    main()
