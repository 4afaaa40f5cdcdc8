"""Client of the recycling service: disposal guidance for a category code.

Guidance is a nice-to-have on top of the category: when recycling is down, slow or answers
nonsense, `fetch` returns None after a few quick retries and the analysis completes without it.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import structlog

log = structlog.get_logger(__name__)

# What the app shows; an answer without these is not guidance we can use.
REQUIRED_FIELDS = frozenset(
    {
        "code",
        "name_ko",
        "name_en",
        "disposal",
        "steps",
        "mistakes",
        "marks",
        "sources",
        "varies_by_region",
    }
)
# Worth another try: the service may be restarting or momentarily overloaded.
RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})


@dataclass
class GuidanceClient:
    """Fetches `GET {base_url}/api/v1/recycling/categories/{code}` with timeout and retry.

    Answers are cached per code for `cache_seconds`: the rules change rarely, and the worker
    asks for the same 21 codes all day. When recycling is down, it is not asked again for
    `down_cooldown_seconds`: every analysis in the meantime completes at once without guidance
    instead of spending the retries' time on a service known to be down.
    """

    base_url: str
    http: httpx.AsyncClient
    attempts: int = 3
    backoff_seconds: float = 0.1
    cache_seconds: float = 300.0
    down_cooldown_seconds: float = 5.0
    _cache: dict[str, tuple[float, dict[str, Any]]] = field(default_factory=dict, repr=False)
    _down_until: float = field(default=0.0, repr=False)

    async def fetch(self, code: str) -> dict[str, Any] | None:
        cached = self._cache.get(code)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        if self._down_until > time.monotonic():
            return None
        guidance = await self._fetch_with_retry(code)
        if guidance is not None and self.cache_seconds > 0:
            self._cache[code] = (time.monotonic() + self.cache_seconds, guidance)
        return guidance

    async def _fetch_with_retry(self, code: str) -> dict[str, Any] | None:
        url = f"{self.base_url.rstrip('/')}/api/v1/recycling/categories/{code}"
        for attempt in range(1, self.attempts + 1):
            try:
                response = await self.http.get(url, headers={"Accept": "application/json"})
            # Refused, reset, timed out, or a body that cannot be decoded (a bad gzip stream).
            except httpx.RequestError as exc:
                reason = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code == 200:
                    return _valid_guidance(response, code)
                if response.status_code not in RETRYABLE_STATUS:
                    log.warning("guidance.refused", code=code, status=response.status_code)
                    return None
                reason = f"HTTP {response.status_code}"
            log.warning("guidance.attempt_failed", code=code, attempt=attempt, reason=reason)
            if attempt < self.attempts:
                await asyncio.sleep(self.backoff_seconds * 2 ** (attempt - 1))
        self._down_until = time.monotonic() + self.down_cooldown_seconds
        return None


def create_guidance_client(
    base_url: str,
    *,
    timeout_seconds: float = 2.0,
    attempts: int = 3,
    cache_seconds: float = 300.0,
    down_cooldown_seconds: float = 5.0,
) -> GuidanceClient:
    http = httpx.AsyncClient(timeout=httpx.Timeout(timeout_seconds))
    return GuidanceClient(
        base_url=base_url,
        http=http,
        attempts=attempts,
        cache_seconds=cache_seconds,
        down_cooldown_seconds=down_cooldown_seconds,
    )


def _valid_guidance(response: httpx.Response, code: str) -> dict[str, Any] | None:
    try:
        body = response.json()
    except ValueError:
        log.warning("guidance.not_json", code=code)
        return None
    if not isinstance(body, dict) or not body.keys() >= REQUIRED_FIELDS or body["code"] != code:
        log.warning("guidance.unexpected_shape", code=code)
        return None
    return body
