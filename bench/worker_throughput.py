"""Worker throughput with the local model: images per second per core, end to end through
Celery (Redis broker), the pipeline's four stages, PostgreSQL writes with the outbox event,
progress events in Redis and guidance (a stand-in recycling service, answers cached).

    uv run --frozen python bench/worker_throughput.py [--images 300] [--concurrency 1]

Analyses are inserted and their photos stored beforehand, so only the worker is measured; all
are enqueued at once and the clock stops when the last one is `completed`. Two figures:
- wall-clock images/s of the worker (what a node gives, on whatever else the machine runs);
- images per CPU-second of the worker's processes (= images/s per fully used core), which
  holds on a busy, shared machine. PostgreSQL's and Redis's own CPU is not included.
Goal (issue 3): >= 50 images/s per core. For the bare model, see bench/classifier_throughput.py.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).parent))
import machine
from waste_worker_stack import (
    add_classifier_options,
    celery_worker,
    classifier_description,
    classifier_env,
    recycling_stand_in,
    shared_photos,
)

from ecosort_common.migrations import upgrade
from ecosort_common.testing import temporary_database, temporary_redis_db
from ecosort_waste import worker as waste_worker
from ecosort_waste.config import Settings
from ecosort_waste.storage import storage_from_settings


def insert_analyses(database_url: str, settings: Settings, photos: list[bytes]) -> list[uuid.UUID]:
    storage = storage_from_settings(settings)
    ids = []
    with psycopg.connect(database_url.replace("+psycopg", ""), autocommit=True) as conn:
        for photo in photos:
            analysis_id = uuid.uuid4()
            key = f"analyses/{analysis_id}.jpg"
            storage.put(key, photo, "image/jpeg")
            conn.execute(
                "INSERT INTO analyses (id, owner_id, status, progress, image_key, image_sha256)"
                " VALUES (%s, %s, 'queued', 0, %s, %s)",
                (analysis_id, uuid.uuid4(), key, hashlib.sha256(photo).hexdigest()),
            )
            ids.append(analysis_id)
    return ids


def count_completed(database_url: str) -> tuple[int, int]:
    with psycopg.connect(database_url.replace("+psycopg", "")) as conn:
        row = conn.execute(
            "SELECT count(*) FILTER (WHERE status = 'completed'),"
            " count(*) FILTER (WHERE status = 'failed') FROM analyses"
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def count_with_guidance(database_url: str) -> int:
    """Completed analyses whose result carries recycling's guidance (the stage really ran)."""
    with psycopg.connect(database_url.replace("+psycopg", "")) as conn:
        row = conn.execute(
            "SELECT count(*) FROM analyses WHERE (result->>'guidance_available')::boolean"
        ).fetchone()
    assert row is not None
    return int(row[0])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=1, help="pool processes (cores)")
    parser.add_argument("--pool", choices=("prefork", "solo"), default="prefork")
    add_classifier_options(parser)
    args = parser.parse_args()

    with (
        temporary_database("bench_worker") as database_url,
        temporary_redis_db() as redis_url,
        tempfile.TemporaryDirectory(prefix="ecosort-bench-") as data_dir,
        recycling_stand_in() as recycling_url,
    ):
        upgrade("ecosort_waste", database_url)
        settings = Settings(
            database_url=database_url,
            redis_url=redis_url,
            data_dir=data_dir,
            recycling_url=recycling_url,
            celery_key_prefix=f"bench-{uuid.uuid4().hex[:8]}:",
        )
        env = {
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "DATA_DIR": data_dir,
            "RECYCLING_URL": recycling_url,
            "CELERY_KEY_PREFIX": settings.celery_key_prefix,
            **classifier_env(args),
            "LOG_LEVEL": "info",  # production's (charts/waste/values.yaml)
        }
        ids = insert_analyses(database_url, settings, shared_photos(args.images))
        waste_worker.app = waste_worker.create_celery_app(settings)
        log_dir = Path(data_dir) / "logs"
        log_dir.mkdir()
        with celery_worker(
            env, concurrency=args.concurrency, log_dir=log_dir, pool=args.pool
        ) as worker:
            cpu_before = worker.cpu_seconds()
            main_before = worker.cpu_seconds(main_only=True)
            started = time.perf_counter()
            for analysis_id in ids:
                waste_worker.enqueue_analysis(analysis_id)
            while sum(count_completed(database_url)) < len(ids):
                time.sleep(0.05)
            wall = time.perf_counter() - started
            cpu = worker.cpu_seconds() - cpu_before
            main_cpu = worker.cpu_seconds(main_only=True) - main_before
        completed, failed = count_completed(database_url)
        with_guidance = count_with_guidance(database_url)

    print(f"machine: {machine.describe()}")
    print(
        f"images: {len(ids)} ({completed} completed, {with_guidance} of them with guidance;"
        f" {failed} failed)"
    )
    print(
        f"worker pool: {args.pool}, processes: {args.concurrency}, {classifier_description(args)}"
    )
    print(f"wall-clock: {wall:.2f} s -> {len(ids) / wall:.1f} images/s")
    print(f"worker CPU: {cpu:.2f} s -> {len(ids) / cpu:.1f} images per CPU-second (per core)")
    print(
        f"  of which the main (consumer) process: {main_cpu:.2f} s, the pool: {cpu - main_cpu:.2f}"
        f" s = {1000 * (cpu - main_cpu) / len(ids):.1f} ms per image"
    )
    if failed:
        # A failed analysis stops early and costs less: the figures above would flatter the worker.
        sys.exit(f"{failed} of {len(ids)} analyses failed: these figures do not measure the worker")


if __name__ == "__main__":
    main()
