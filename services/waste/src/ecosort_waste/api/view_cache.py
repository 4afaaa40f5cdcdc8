"""Per-process cache of analysis views for the polling path, `GET /analyses/{id}`.

A client polls its analysis about once a second and most polls find nothing changed, so reading
PostgreSQL every time is waste. Every state change the pipeline and the reaper make is followed by
an event that bumps the analysis' `seq` in Redis (progress.py), and each poll reads that hash
anyway for the live progress: a cached view is used only while the seq it was read under is still
the current one. The short age limit covers database writes that publish nothing (an enqueue that
failed, a user's data deleted) and a Redis that lost its keys.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from cachetools import TTLCache

from ecosort_waste.api.schemas import AnalysisView

VIEW_CACHE_SIZE = 10_000
VIEW_CACHE_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class _Entry:
    seq: str
    view: AnalysisView


class AnalysisViewCache:
    def __init__(self, size: int = VIEW_CACHE_SIZE, seconds: float = VIEW_CACHE_SECONDS) -> None:
        # Keyed by owner too: someone else's id never finds an entry and goes to the database,
        # which answers 404.
        self._entries: TTLCache[tuple[uuid.UUID, uuid.UUID], _Entry] = TTLCache(size, seconds)

    def get(self, owner_id: uuid.UUID, analysis_id: uuid.UUID, seq: str) -> AnalysisView | None:
        entry = self._entries.get((owner_id, analysis_id))
        return entry.view if entry is not None and entry.seq == seq else None

    def put(
        self, owner_id: uuid.UUID, analysis_id: uuid.UUID, seq: str, view: AnalysisView
    ) -> None:
        self._entries[(owner_id, analysis_id)] = _Entry(seq, view)
