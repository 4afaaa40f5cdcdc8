"""The polling read's view cache: concurrent misses share one load."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest

from ecosort_common.errors import Problem
from ecosort_waste.api.schemas import AnalysisView
from ecosort_waste.api.view_cache import AnalysisViewCache

OWNER, ANALYSIS = uuid.uuid4(), uuid.uuid4()


def view(progress: int) -> AnalysisView:
    now = datetime.now(UTC)
    return AnalysisView.model_validate(
        {
            "id": ANALYSIS,
            "status": "processing",
            "progress": progress,
            "stage": "classify",
            "result": None,
            "error": None,
            "created_at": now,
            "updated_at": now,
            "completed_at": None,
            "links": {"self": "/self", "events": "/events"},
        }
    )


@dataclass
class CountingLoad:
    """A loader that takes a moment, like a database read, and counts its calls."""

    outcome: AnalysisView | Problem
    calls: int = 0

    async def __call__(self) -> AnalysisView:
        self.calls += 1
        await asyncio.sleep(0.02)
        if isinstance(self.outcome, Problem):
            raise self.outcome
        return self.outcome


async def test_concurrent_misses_share_one_load_and_then_hit() -> None:
    cache = AnalysisViewCache()
    load = CountingLoad(view(40))

    views = await asyncio.gather(*(cache.get(OWNER, ANALYSIS, "7", load) for _ in range(50)))
    assert load.calls == 1
    assert {v.progress for v in views} == {40}
    await cache.get(OWNER, ANALYSIS, "7", load)
    assert load.calls == 1
    await cache.get(OWNER, ANALYSIS, "8", load)  # a new event: read again
    assert load.calls == 2
    await cache.get(uuid.uuid4(), ANALYSIS, "8", load)  # someone else: never the owner's entry
    assert load.calls == 3


async def test_a_failed_load_reaches_every_waiter_and_is_not_kept() -> None:
    cache = AnalysisViewCache()
    missing = CountingLoad(Problem(404, "No analysis."))

    results = await asyncio.gather(
        *(cache.get(OWNER, ANALYSIS, "1", missing) for _ in range(10)), return_exceptions=True
    )
    assert missing.calls == 1
    assert all(isinstance(r, Problem) and r.status == 404 for r in results)
    with pytest.raises(Problem):
        await cache.get(OWNER, ANALYSIS, "1", missing)
    assert missing.calls == 2


async def test_a_waiter_that_goes_away_does_not_cancel_the_others() -> None:
    cache = AnalysisViewCache()
    release = asyncio.Event()

    async def slow() -> AnalysisView:
        await release.wait()
        return view(55)

    first = asyncio.create_task(cache.get(OWNER, ANALYSIS, "2", slow))
    second = asyncio.create_task(cache.get(OWNER, ANALYSIS, "2", slow))
    await asyncio.sleep(0)
    first.cancel()
    release.set()
    assert (await second).progress == 55
    with pytest.raises(asyncio.CancelledError):
        await first
