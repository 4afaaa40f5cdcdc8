"""The mobile app's journey through the gateway, across every service and the events between
them: sign in, photograph, follow progress, read guidance, see history, correct, delete."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from ecosort_devstack.config import find_repo_root

REPO = find_repo_root(Path(__file__).parent)
SHARED = REPO.parent / "shared"
PHOTO = SHARED / "data" / "waste-images" / "glass" / "glass1.jpg"
CATEGORY_CODES_URL = "/api/v1/recycling/categories"


def _eventually(check: Callable[[], Any], timeout: float = 30.0) -> Any:
    """Events cross services asynchronously (outbox relay → stream → consumer)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.2)


def _sign_in(http: httpx.Client, subject: str) -> dict[str, str]:
    answer = http.post("/api/v1/auth/dev/login", json={"subject": subject, "nickname": "분리왕"})
    assert answer.status_code == 200, answer.text
    return {"Authorization": f"Bearer {answer.json()['access_token']}"}


def _follow_events(http: httpx.Client, url: str, headers: dict[str, str]) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    with http.stream("GET", url, headers=headers, timeout=60) as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        for line in stream.iter_lines():
            if not line:
                if "event" in current:
                    events.append(current)
                current = {}
                continue
            field, _, value = line.partition(":")
            current[field] = value.strip()
    return events


@pytest.fixture
def http(gateway_url: str) -> httpx.Client:
    return httpx.Client(base_url=gateway_url, timeout=30)


def test_photo_to_guidance_history_and_deletion(http: httpx.Client) -> None:
    headers = _sign_in(http, f"journey-{uuid.uuid4().hex[:8]}")
    codes = {c["code"] for c in http.get(CATEGORY_CODES_URL).json()["items"]}
    assert len(codes) == 21

    created = http.post(
        "/api/v1/waste/analyses",
        headers=headers,
        files={"image": ("bottle.jpg", PHOTO.read_bytes(), "image/jpeg")},
    )
    assert created.status_code == 202, created.text
    analysis = created.json()
    events = _follow_events(http, analysis["links"]["events"], headers)
    assert events[-1]["event"] == "completed", events
    sequence = [int(e["id"]) for e in events]
    assert sequence == sorted(sequence)

    status = http.get(analysis["links"]["self"], headers=headers).json()
    assert status["status"] == "completed" and status["progress"] == 100
    result = status["result"]
    # The stack's local model is sure of this TrashNet glass photo (0.98): its answer, not
    # "not sure", is what the worker stored.
    assert (result["category"], result["not_sure"]) == ("glass_bottle", False)
    assert result["category"] in codes
    assert result["provider"] == "local" and result["model_version"] and result["head_version"]
    # Guidance came from the recycling service over HTTP, for the category predicted.
    assert result["guidance_available"] is True
    assert result["guidance"]["code"] == result["category"]
    assert result["guidance"]["steps"]

    # analysis.completed travelled waste → outbox → Redis Streams → users.
    def history() -> list[dict[str, Any]]:
        page = http.get("/api/v1/users/me/history", headers=headers).json()
        return [i for i in page["items"] if i["analysis_id"] == analysis["id"]]

    assert _eventually(history), "the analysis never reached the user's history"
    assert http.get("/api/v1/users/me/stats", headers=headers).json()["total_analyses"] == 1

    corrected = "battery" if result["category"] != "battery" else "glass_bottle"
    feedback = http.post(
        f"/api/v1/waste/analyses/{analysis['id']}/feedback",
        headers=headers,
        json={"category": corrected},
    )
    assert feedback.status_code == 201, feedback.text

    # analysis.corrected travelled the same way: history and statistics count the correction.
    def counted_as_corrected() -> bool:
        stats = http.get("/api/v1/users/me/stats", headers=headers).json()
        counted = {c["category"]: c["count"] for c in stats["by_category"]}
        return [i["category"] for i in history()] == [corrected] and counted == {corrected: 1}

    assert _eventually(counted_as_corrected), "the correction never reached the user's history"

    stranger = _sign_in(http, f"stranger-{uuid.uuid4().hex[:8]}")
    assert http.get(analysis["links"]["self"], headers=stranger).status_code == 404

    # Deleting the account: users emits user.deleted; auth revokes the sessions, so the same
    # access token stops working in every service.
    assert http.delete("/api/v1/users/me", headers=headers).status_code == 204

    def refused() -> bool:
        return http.get("/api/v1/waste/analyses", headers=headers).status_code == 401

    assert _eventually(refused), "the deleted user's token still works"


def test_search_and_nearest_collection_points(http: httpx.Client) -> None:
    found = http.get("/api/v1/recycling/items", params={"q": "보조베터리"})
    assert found.status_code == 200
    top = found.json()["items"][0]
    assert "battery" in json.dumps(top)

    points = http.get(
        "/api/v1/locations/collection-points",
        params={"lat": 37.5665, "lng": 126.9780, "radius_m": 3000, "limit": 5},
    )
    assert points.status_code == 200
    distances = [p["distance_m"] for p in points.json()["items"]]
    assert distances == sorted(distances)


def test_the_mobile_contract_smoke_passes(gateway_url: str) -> None:
    run = subprocess.run(
        [sys.executable, str(SHARED / "tools" / "contract-smoke.py"), gateway_url],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "FAIL" not in run.stdout
