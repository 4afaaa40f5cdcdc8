"""Access-token verifications per second with ecosort_common.security (warm JWKS cache).

    uv run --frozen python bench/token_verify.py [--seconds 3] [--redis redis://127.0.0.1:6379/15]

Two figures: the signature and claims checks alone, and with the revocation lookup in Redis
(one EXISTS per token, as every service does in production). The JWKS is fetched once before
timing starts; the tokens are ES256, signed the way auth signs them.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid

import httpx
from redis.asyncio import Redis

from ecosort_common.security import TokenVerifier
from ecosort_common.testing import TokenIssuer

TOKENS = 200  # distinct tokens, so nothing is accidentally cached per token


async def _measure(
    verifier: TokenVerifier, tokens: list[str], seconds: float
) -> tuple[float, float]:
    """Verifications per wall-clock second, and per CPU second of this process (the second
    figure holds steadier on a machine shared with other work)."""
    await verifier.verify(tokens[0])  # warm the JWKS cache (the only HTTP call)
    done = 0
    start, cpu_start = time.perf_counter(), time.process_time()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        for token in tokens:
            await verifier.verify(token)
        done += len(tokens)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    return done / wall, done / cpu


def _verifier(issuer: TokenIssuer, redis: Redis | None) -> TokenVerifier:
    jwks = issuer.jwks()
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json=jwks))
    return TokenVerifier(
        jwks_url="http://auth.bench/api/v1/auth/jwks.json",
        issuer=issuer.issuer,
        audience=issuer.audience,
        redis=redis,
        http=httpx.AsyncClient(transport=transport),
    )


async def main(seconds: float, redis_url: str) -> None:
    issuer = TokenIssuer()
    tokens = [issuer.token(uuid.uuid4()) for _ in range(TOKENS)]
    local = _verifier(issuer, None)
    wall, cpu = await _measure(local, tokens, seconds)
    print(f"signature + claims only:     {wall:8.0f} /s wall clock, {cpu:8.0f} /CPU-s")
    await local.aclose()
    redis = Redis.from_url(redis_url)
    try:
        with_redis = _verifier(issuer, redis)
        wall, cpu = await _measure(with_redis, tokens, seconds)
        print(f"+ revocation check in Redis: {wall:8.0f} /s wall clock, {cpu:8.0f} /CPU-s")
        await with_redis.aclose()
    finally:
        await redis.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/15")
    args = parser.parse_args()
    asyncio.run(main(args.seconds, args.redis))
