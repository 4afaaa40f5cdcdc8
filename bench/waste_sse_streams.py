"""SSE at scale: 5,000 concurrent `GET /api/v1/waste/analyses/{id}/events` streams on one API
process, which must hold ONE Redis subscription between them. Reports the API's RSS (goal
<= 300 MB), Redis subscriptions, fan-out latency of a progress event, and that every stream
ends after the final event.

    uv run --frozen python bench/waste_sse_streams.py [--streams 5000] [--analyses 100]

The client is plain asyncio sockets with h11 (no per-stream HTTP client objects), in this
process; the API runs in its own uvicorn process with the file-descriptor limit raised.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import h11
from redis.asyncio import Redis

sys.path.insert(0, str(Path(__file__).parent))
import machine
from waste_api_stack import API, WasteApi, waste_api

from ecosort_waste.progress import publish_event

CONNECT_BATCH = 250


@dataclass
class StreamClient:
    analysis_id: str
    received: dict[int, float] = field(default_factory=dict)  # seq -> arrival (perf_counter)
    ended: bool = False
    status: int = 0
    heartbeats: int = 0


async def open_stream(
    host: str, port: int, path: str, headers: dict[str, str], client: StreamClient
) -> asyncio.Task[None]:
    reader, writer = await asyncio.open_connection(host, port)
    conn = h11.Connection(h11.CLIENT)
    request = h11.Request(
        method="GET",
        target=path,
        headers=[("Host", host), ("Accept", "text/event-stream"), *headers.items()],
    )
    writer.write(conn.send(request) + conn.send(h11.EndOfMessage()))
    await writer.drain()
    buffer = b""
    while not client.status:
        conn.receive_data(await reader.read(65536))
        while (event := conn.next_event()) not in (h11.NEED_DATA, h11.PAUSED):
            if isinstance(event, h11.Response):
                client.status = event.status_code
            elif isinstance(event, h11.Data):
                buffer += bytes(event.data)

    async def consume() -> None:
        nonlocal buffer
        try:
            while True:
                buffer = _take_events(buffer, client)
                data = await reader.read(65536)
                conn.receive_data(data)
                while (event := conn.next_event()) not in (h11.NEED_DATA, h11.PAUSED):
                    if isinstance(event, h11.Data):
                        buffer += bytes(event.data)
                    elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                        _take_events(buffer, client)
                        client.ended = True
                        return
                if not data:
                    client.ended = True
                    return
        finally:
            writer.close()

    return asyncio.create_task(consume())


async def api_redis_clients(redis: Redis) -> list[dict[str, str]]:
    """Clients of the stack's Redis database: the API's, and this one."""
    db = redis.connection_pool.connection_kwargs.get("db", 0)
    return [c for c in await redis.client_list() if int(c["db"]) == db]


def _take_events(buffer: bytes, client: StreamClient) -> bytes:
    now = time.perf_counter()
    while b"\r\n\r\n" in buffer or b"\n\n" in buffer:
        sep = b"\r\n\r\n" if b"\r\n\r\n" in buffer else b"\n\n"
        block, buffer = buffer.split(sep, 1)
        for line in block.splitlines():
            if line.startswith(b"id:"):
                client.received[int(line[3:].strip())] = now
            elif line.startswith(b":"):
                client.heartbeats += 1
    return buffer


async def run(api: WasteApi, streams: int, analyses: int) -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < streams + 500:
        raise SystemExit(f"ulimit -n is {hard}; {streams} streams need at least {streams + 500}")
    user = uuid.uuid4()
    analysis_ids = [api.create_analysis(user, seed) for seed in range(analyses)]
    headers = api.headers(user)
    split = urlsplit(api.base_url)
    host, port = split.hostname or "127.0.0.1", split.port or 80
    rss_idle = api.rss_mb()
    redis = Redis.from_url(api.redis_url, decode_responses=True)
    subscriptions_idle = sum(int(c.get("sub", 0)) > 0 for c in await api_redis_clients(redis))

    clients = [StreamClient(analysis_ids[i % analyses]) for i in range(streams)]
    tasks: list[asyncio.Task[None]] = []
    started = time.perf_counter()
    for offset in range(0, streams, CONNECT_BATCH):
        batch = clients[offset : offset + CONNECT_BATCH]
        tasks += await asyncio.gather(
            *(
                open_stream(host, port, f"{API}/analyses/{c.analysis_id}/events", headers, c)
                for c in batch
            )
        )
    connect_seconds = time.perf_counter() - started
    refused = sum(c.status != 200 for c in clients)
    await asyncio.sleep(2)  # let the server settle before reading its memory
    rss_streams = api.rss_mb()
    open_at_reading = sum(c.status == 200 and not c.ended for c in clients)

    listed = await api_redis_clients(redis)
    subscriptions = sum(int(c.get("sub", 0)) > 0 for c in listed)

    # One progress event per analysis: every stream of it should receive seq 1.
    published = time.perf_counter()
    for analysis_id in analysis_ids:
        data = {"status": "processing", "stage": "classify", "progress": 50}
        await publish_event(redis, analysis_id, "progress", data)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not all(1 in c.received for c in clients):  # noqa: ASYNC110 - polling the clients' state is the measurement
        await asyncio.sleep(0.05)
    delays = sorted((c.received[1] - published) * 1000 for c in clients if 1 in c.received)

    for analysis_id in analysis_ids:
        await publish_event(redis, analysis_id, "completed", {"status": "completed"})
    await asyncio.wait(tasks, timeout=30)
    ended = sum(c.ended and 2 in c.received for c in clients)
    rss_after = api.rss_mb()
    rss_peak = api.rss_mb("VmHWM")  # the most it held at any moment, the fan-out included
    await redis.aclose()  # type: ignore[attr-defined]  # stubs predate aclose

    # Inclusive: the default (exclusive) method extrapolates past the largest delay on few streams.
    cuts = (
        statistics.quantiles(delays, n=100, method="inclusive")
        if len(delays) > 2
        else [float("nan")] * 99
    )
    per_stream_kb = (rss_streams - rss_idle) * 1024 / max(1, streams - refused)
    print(
        f"waste SSE streams | one uvicorn process, {streams} streams over {analyses} analyses\n"
        f"  connected {streams - refused}/{streams} in {connect_seconds:.1f} s "
        f"(refused {refused}; {open_at_reading} still open when the RSS was read)\n"
        f"  API RSS: {rss_idle:.0f} MB idle -> {rss_streams:.0f} MB with the streams open "
        f"(goal <= 300 MB; {per_stream_kb:.1f} kB per stream); {rss_after:.0f} MB after they end, "
        f"peak {rss_peak:.0f} MB\n"
        f"  Redis subscriptions held by the API: {subscriptions} with the streams open, "
        f"{subscriptions_idle} idle (progress hub, revoked sessions); "
        f"Redis clients of the API in all: {len(listed) - 1}\n"
        f"  fan-out of one event per analysis: {len(delays)}/{streams} delivered, "
        f"p50 {cuts[49]:.0f} ms, p99 {cuts[98]:.0f} ms, max {max(delays, default=0):.0f} ms\n"
        f"  streams ended after the final event: {ended}/{streams}\n"
        f"  machine: {machine.describe()}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--streams", type=int, default=5000)
    parser.add_argument("--analyses", type=int, default=100)
    args = parser.parse_args()
    with waste_api() as api:
        asyncio.run(run(api, args.streams, args.analyses))


if __name__ == "__main__":
    main()
