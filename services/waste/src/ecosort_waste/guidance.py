"""Client of the recycling service: disposal guidance for a category code.

Guidance is a nice-to-have on top of the category: when recycling is down, slow or answers
nonsense, `fetch` returns None after a few quick retries and the analysis completes without it.
"""

from __future__ import annotations

import asyncio
import json
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
# An answer is a few kilobytes; anything much larger is not guidance, and reading it whole would
# hold the worker's memory and time.
MAX_BODY_BYTES = 256 * 1024


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
    # The whole of one attempt, body included: httpx's timeout bounds each read, and a service
    # sending a byte a second never trips it.
    attempt_timeout_seconds: float = 2.0
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
                async with asyncio.timeout(self.attempt_timeout_seconds):
                    status, body = await self._get(url)
            # Refused, reset, timed out, or a body that cannot be decoded (a bad gzip stream).
            except httpx.RequestError as exc:
                reason = f"{type(exc).__name__}: {exc}"
            except TimeoutError:
                reason = f"no whole answer within {self.attempt_timeout_seconds:g} s"
            else:
                if status == 200:
                    return _valid_guidance(body, code)
                if status not in RETRYABLE_STATUS:
                    log.warning("guidance.refused", code=code, status=status)
                    return None
                reason = f"HTTP {status}"
            log.warning("guidance.attempt_failed", code=code, attempt=attempt, reason=reason)
            if attempt < self.attempts:
                await asyncio.sleep(self.backoff_seconds * 2 ** (attempt - 1))
        self._down_until = time.monotonic() + self.down_cooldown_seconds
        return None

    async def _get(self, url: str) -> tuple[int, bytes | None]:
        """The status and body, or None for a body past MAX_BODY_BYTES (read no further)."""
        headers = {"Accept": "application/json"}
        # The request the analysis came from (the worker binds it), so recycling logs it too.
        request_id = structlog.contextvars.get_contextvars().get("request_id")
        if request_id:
            headers["X-Request-ID"] = request_id
        async with self.http.stream("GET", url, headers=headers) as response:
            if response.status_code != 200:
                return response.status_code, b""
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > MAX_BODY_BYTES:
                    return response.status_code, None
            return response.status_code, bytes(body)


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
        attempt_timeout_seconds=timeout_seconds,
    )


def _valid_guidance(content: bytes | None, code: str) -> dict[str, Any] | None:
    if content is None:
        log.warning("guidance.too_large", code=code, limit=MAX_BODY_BYTES)
        return None
    try:
        body = json.loads(content)
    # RecursionError: a body nested deeper than the parser's stack (`[[[[…`), which is nonsense
    # like any other, not a reason to fail the analysis.
    except (ValueError, RecursionError):
        log.warning("guidance.not_json", code=code)
        return None
    if not isinstance(body, dict) or not body.keys() >= REQUIRED_FIELDS or body["code"] != code:
        log.warning("guidance.unexpected_shape", code=code)
        return None
    return body
