"""Access-token verifications per second with ecosort_common.security (warm JWKS cache).

    uv run --frozen python bench/token_verify.py [--seconds 3] [--redis redis://127.0.0.1:6379/15]

Three figures:
- a token seen for the first time: the ES256 signature and the claims (no revocation check);
- a token seen before (remembered) with the revocation check in Redis, one ZSCORE per request:
  what a process does while its revocation subscription is down;
- a token seen before with the revocation watcher subscribed: the normal path.
The JWKS is fetched once before timing starts; the tokens are signed the way auth signs them.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from collections.abc import Iterator
from contextlib import suppress
from itertools import cycle

import httpx
import machine
from redis.asyncio import Redis

from ecosort_common.revocation import RevocationWatcher
from ecosort_common.security import TokenVerifier
from ecosort_common.subscription import Subscription
from ecosort_common.testing import TokenIssuer


async def _measure(verifier: TokenVerifier, tokens: Iterator[str], seconds: float) -> float:
    """Verifications per CPU second of this process (steadier than wall clock on a machine
    shared with other work)."""
    done = 0
    deadline = time.perf_counter() + seconds
    cpu_start = time.process_time()
    while time.perf_counter() < deadline:
        for _ in range(50):
            await verifier.verify(next(tokens))
        done += 50
    return done / (time.process_time() - cpu_start)


def _verifier(issuer: TokenIssuer, revocations: RevocationWatcher | None) -> TokenVerifier:
    jwks = issuer.jwks()
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json=jwks))
    return TokenVerifier(
        jwks_url="http://auth.bench/api/v1/auth/jwks.json",
        issuer=issuer.issuer,
        audience=issuer.audience,
        revocations=revocations,
        http=httpx.AsyncClient(transport=transport),
    )


async def main(seconds: float, redis_url: str) -> None:
    print(f"machine: {machine.describe()}")
    issuer = TokenIssuer()
    fresh = (issuer.token(uuid.uuid4()) for _ in iter(int, 1))  # never the same token twice
    polling = cycle([issuer.token(uuid.uuid4()) for _ in range(64)])
    local = _verifier(issuer, None)
    await local.verify(next(fresh))  # warm the JWKS cache (the only HTTP call)
    print(
        f"first sight (signature + claims):   {await _measure(local, fresh, seconds):8.0f} /CPU-s"
    )
    await local.aclose()
    redis = Redis.from_url(redis_url, decode_responses=True)
    subscription = Subscription(redis)
    verifier = _verifier(issuer, RevocationWatcher(redis, subscription))
    try:
        for _ in range(64):
            await verifier.verify(next(polling))
        rate = await _measure(verifier, polling, seconds)
        print(f"seen before, revocation in Redis:   {rate:8.0f} /CPU-s")
        following = asyncio.create_task(subscription.run())
        await subscription.subscribed.wait()
        rate = await _measure(verifier, polling, seconds)
        print(f"seen before, revocation subscribed: {rate:8.0f} /CPU-s")
        following.cancel()
        with suppress(asyncio.CancelledError):
            await following
    finally:
        await verifier.aclose()
        await redis.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/15")
    args = parser.parse_args()
    asyncio.run(main(args.seconds, args.redis))
