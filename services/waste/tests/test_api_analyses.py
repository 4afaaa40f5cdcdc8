"""Creating, reading, listing and correcting analyses through the HTTP API (real PostgreSQL)."""

from __future__ import annotations

import asyncio
import io
import uuid
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from PIL import ExifTags, Image
from sqlalchemy import delete, func, select, text, update
from sqlalchemy.exc import DBAPIError
from starlette.routing import Match

from ecosort_common.testing import TokenIssuer
from ecosort_waste import crud, images
from ecosort_waste.api.routes.analyses import poll_analysis
from ecosort_waste.api.routes.events import stream_events
from ecosort_waste.models import Analysis, Correction, outbox
from ecosort_waste.progress import events_key, publish_event, publish_requeued, state_key

from .conftest import Gate, stored_images

API = "/api/v1/waste"
PROBLEM = "application/problem+json"


def jpeg(seed: int = 0, size: tuple[int, int] = (320, 240), **params: Any) -> bytes:
    image = Image.new("RGB", size, (seed % 256, (seed * 7) % 256, (seed * 13) % 256))
    buf = io.BytesIO()
    image.save(buf, format="JPEG", **params)
    return buf.getvalue()


def gps_jpeg() -> bytes:
    exif = Image.Exif()
    exif[ExifTags.Base.GPSInfo] = {
        ExifTags.GPS.GPSLatitudeRef: "N",
        ExifTags.GPS.GPSLatitude: (37.0, 33.0, 59.99),
    }
    exif[ExifTags.Base.Make] = "PhoneWithGPS"
    return jpeg(99, exif=exif)


class User:
    def __init__(self, issuer: TokenIssuer) -> None:
        self.id = uuid.uuid4()
        self.headers = {"Authorization": f"Bearer {issuer.token(self.id)}"}


@pytest.fixture
def user(token_issuer: TokenIssuer) -> User:
    return User(token_issuer)


@pytest.fixture
def other(token_issuer: TokenIssuer) -> User:
    return User(token_issuer)


async def upload(
    client: AsyncClient, who: User, data: bytes, key: str | None = None, name: str = "x.jpg"
) -> Any:
    headers = dict(who.headers)
    if key is not None:
        headers["Idempotency-Key"] = key
    return await client.post(
        f"{API}/analyses", headers=headers, files={"image": (name, data, "image/jpeg")}
    )


async def row(app: FastAPI, analysis_id: str) -> Analysis:
    async with app.state.sessionmaker() as session:
        found = await session.get(Analysis, uuid.UUID(analysis_id))
    assert found is not None
    return found


async def complete(app: FastAPI, analysis_id: str, result: dict[str, Any]) -> None:
    """What the pipeline's save does to the row (no worker runs in these tests)."""
    async with app.state.sessionmaker() as session:
        await session.execute(
            update(Analysis)
            .where(Analysis.id == uuid.UUID(analysis_id))
            .values(status="completed", stage="save", progress=100, result=result)
        )
        await session.commit()


async def count_owned(app: FastAPI, owner: uuid.UUID) -> int:
    async with app.state.sessionmaker() as session:
        stmt = select(func.count()).select_from(Analysis).where(Analysis.owner_id == owner)
        return int((await session.execute(stmt)).scalar_one())


async def corrections_of(app: FastAPI, analysis_id: str) -> list[Correction]:
    async with app.state.sessionmaker() as session:
        stmt = select(Correction).where(Correction.analysis_id == uuid.UUID(analysis_id))
        return list((await session.execute(stmt)).scalars())


async def corrected_events(app: FastAPI, analysis_id: str) -> list[dict[str, Any]]:
    """The payloads of the `analysis.corrected` events staged for users, oldest first."""
    async with app.state.sessionmaker() as session:
        stmt = (
            select(outbox.c.payload)
            .where(outbox.c.event_type == "analysis.corrected")
            .where(outbox.c.payload["analysis_id"].astext == analysis_id)
            .order_by(outbox.c.occurred_at)
        )
        return list((await session.execute(stmt)).scalars())


def assert_problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body: dict[str, Any] = response.json()
    assert body["status"] == status and body["title"]
    assert "Traceback" not in response.text
    return body


async def test_upload_answers_202_and_enqueues_once(
    app: FastAPI, client: AsyncClient, user: User, enqueued: list[uuid.UUID]
) -> None:
    response = await upload(client, user, jpeg(1))
    assert response.status_code == 202, response.text
    body = response.json()
    assert set(body) == {"id", "status", "links"}
    assert body["status"] == "queued"
    assert body["links"] == {
        "self": f"{API}/analyses/{body['id']}",
        "events": f"{API}/analyses/{body['id']}/events",
    }
    assert response.headers["location"] == body["links"]["self"]
    assert enqueued == [uuid.UUID(body["id"])]

    status = (await client.get(body["links"]["self"], headers=user.headers)).json()
    assert status["status"] == "queued" and status["progress"] == 0
    assert status["result"] is None and status["error"] is None and status["stage"] is None


async def test_stored_image_is_sanitised_without_location(
    app: FastAPI, client: AsyncClient, user: User, enqueued: list[uuid.UUID]
) -> None:
    response = await upload(client, user, gps_jpeg(), name="holiday.heic")
    assert response.status_code == 202, response.text
    stored_row = await row(app, response.json()["id"])
    stored = app.state.storage.get(stored_row.image_key)
    assert stored_row.image_key.startswith(f"images/{user.id}/")
    assert b"Exif" not in stored and b"PhoneWithGPS" not in stored
    assert not Image.open(io.BytesIO(stored)).getexif()


async def test_requires_a_token(client: AsyncClient) -> None:
    response = await client.post(
        f"{API}/analyses", files={"image": ("x.jpg", jpeg(), "image/jpeg")}
    )
    assert_problem(response, 401)


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"plain text, not a photo", 415),
        (b"GIF89a" + b"\0" * 100, 415),
        (jpeg(2)[:300], 422),
        (b"\xff\xd8\xff" + b"\0" * (10 * 1024 * 1024 + 10), 413),
    ],
    ids=["text", "gif", "truncated", "oversize"],
)
async def test_bad_images_are_problems_and_create_nothing(
    app: FastAPI,
    client: AsyncClient,
    user: User,
    enqueued: list[uuid.UUID],
    data: bytes,
    status: int,
) -> None:
    assert_problem(await upload(client, user, data), status)
    assert await count_owned(app, user.id) == 0
    assert enqueued == []


async def test_bomb_is_422(client: AsyncClient, user: User, enqueued: list[uuid.UUID]) -> None:
    # A real 8000x6000 JPEG (48 MP) of one colour compresses to a few hundred kB.
    bomb = jpeg(3, size=(8000, 6000), quality=10)
    assert len(bomb) < 10 * 1024 * 1024
    body = assert_problem(await upload(client, user, bomb), 422)
    assert "pixels" in body["detail"]


async def test_malformed_requests_are_problems(client: AsyncClient, user: User) -> None:
    no_image = await client.post(
        f"{API}/analyses", headers=user.headers, files={"photo": ("x.jpg", jpeg(), "image/jpeg")}
    )
    assert_problem(no_image, 422)
    wrong_type = await client.post(
        f"{API}/analyses", headers={**user.headers, "Content-Type": "text/plain"}, content=b"hi"
    )
    assert_problem(wrong_type, 415)
    bad_json = await client.post(f"{API}/analyses", headers=user.headers, json={"upload": "x"})
    assert_problem(bad_json, 422)
    bad_key = await upload(client, user, jpeg(), key="x" * 300)
    assert_problem(bad_key, 400)


async def test_idempotency_key_replays_and_refuses_a_different_body(
    app: FastAPI, client: AsyncClient, user: User, other: User, enqueued: list[uuid.UUID]
) -> None:
    first = await upload(client, user, jpeg(4), key="photo-1")
    again = await upload(client, user, jpeg(4), key="photo-1", name="renamed.png")
    assert first.status_code == again.status_code == 202
    assert first.json() == again.json()
    assert len(enqueued) == 1

    different = await upload(client, user, jpeg(5), key="photo-1")
    assert assert_problem(different, 422)["type"].endswith("idempotency-key-reused")

    # Keys are per user: another person's "photo-1" is their own analysis.
    theirs = await upload(client, other, jpeg(4), key="photo-1")
    assert theirs.status_code == 202 and theirs.json()["id"] != first.json()["id"]
    assert await count_owned(app, user.id) == 1


async def test_100_concurrent_duplicates_create_exactly_one(
    app: FastAPI, live_url: str, user: User, enqueued: list[uuid.UUID]
) -> None:
    data = jpeg(6, size=(1200, 900))
    headers = {**user.headers, "Idempotency-Key": f"burst-{uuid.uuid4()}"}
    # Real HTTP connections to uvicorn, all in flight at once.
    async with AsyncClient(base_url=live_url, timeout=60) as http:
        responses = await asyncio.gather(
            *(
                http.post(f"{API}/analyses", headers=headers, files={"image": ("a.jpg", data)})
                for _ in range(100)
            )
        )
    assert {r.status_code for r in responses} == {202}, {
        r.text for r in responses if r.status_code != 202
    }
    assert len({r.json()["id"] for r in responses}) == 1
    assert await count_owned(app, user.id) == 1
    assert len(enqueued) == 1


async def test_unreadable_exif_is_no_reason_to_refuse_a_photo(
    client: AsyncClient, user: User, enqueued: list[uuid.UUID]
) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (10, 200, 30)).save(buf, "PNG", exif=b"Exif\x00\x00XXXXXXjunk")
    response = await upload(client, user, buf.getvalue(), name="x.png")
    assert response.status_code == 202, response.text


async def test_a_key_race_loser_stores_nothing(
    app: FastAPI,
    client: AsyncClient,
    user: User,
    enqueued: list[uuid.UUID],
    gate: Gate,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(images, "sanitise", gate.wrap(images.sanitise))
    # The loser finds no analysis for the key, then sanitises while the winner completes.
    loser = asyncio.create_task(upload(client, user, jpeg(21), key="race"))
    await gate.entered()
    winner = await upload(client, user, jpeg(22), key="race")
    gate.release()
    assert winner.status_code == 202, winner.text
    assert assert_problem(await loser, 422)["type"].endswith("idempotency-key-reused")
    assert stored_images(app, user.id) == {(await row(app, winner.json()["id"])).image_key}
    assert len(enqueued) == 1


async def test_requests_with_one_key_take_turns(
    app: FastAPI,
    client: AsyncClient,
    user: User,
    enqueued: list[uuid.UUID],
    gate: Gate,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    storage = app.state.storage
    monkeypatch.setattr(storage, "put", gate.wrap(storage.put))
    first = asyncio.create_task(upload(client, user, jpeg(25), key="turns"))
    await gate.entered()  # the first holds the key, storing its image
    second = asyncio.create_task(upload(client, user, jpeg(26), key="turns"))
    await waiting_for_an_advisory_lock(app)
    gate.release()
    assert (await first).status_code == 202
    # It waited, then found the key taken: it stored nothing.
    assert assert_problem(await second, 422)["type"].endswith("idempotency-key-reused")
    assert stored_images(app, user.id) == {(await row(app, (await first).json()["id"])).image_key}


async def waiting_for_an_advisory_lock(app: FastAPI) -> None:
    waiting = text(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    )
    for _ in range(500):
        async with app.state.sessionmaker() as session:
            if (await session.execute(waiting)).scalar_one():
                return
        await asyncio.sleep(0.01)
    raise AssertionError("no request waited for the lock")


async def test_only_the_owner_sees_or_touches_an_analysis(
    client: AsyncClient, user: User, other: User, enqueued: list[uuid.UUID]
) -> None:
    analysis_id = (await upload(client, user, jpeg(7))).json()["id"]
    assert (
        await client.get(f"{API}/analyses/{analysis_id}", headers=user.headers)
    ).status_code == 200
    base = f"{API}/analyses/{analysis_id}"
    for response in [
        await client.get(base, headers=other.headers),
        await client.get(f"{base}/events", headers=other.headers),
        await client.post(f"{base}/feedback", headers=other.headers, json={"category": "can"}),
    ]:
        assert_problem(response, 404)
    missing = await client.get(f"{API}/analyses/{uuid.uuid4()}", headers=user.headers)
    assert_problem(missing, 404)
    listing = (await client.get(f"{API}/analyses", headers=other.headers)).json()
    assert analysis_id not in {item["id"] for item in listing["items"]}


async def test_list_is_newest_first_with_cursor_pages(
    client: AsyncClient, user: User, enqueued: list[uuid.UUID]
) -> None:
    created = [(await upload(client, user, jpeg(20 + i))).json()["id"] for i in range(5)]
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = (await client.get(f"{API}/analyses", headers=user.headers, params=params)).json()
        pages += 1
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert seen == list(reversed(created))
    assert_problem(await client.get(f"{API}/analyses?cursor=garbage", headers=user.headers), 400)
    assert_problem(await client.get(f"{API}/analyses?limit=1000", headers=user.headers), 422)


async def test_status_shows_live_progress_then_the_result(
    app: FastAPI, client: AsyncClient, user: User, other: User, enqueued: list[uuid.UUID]
) -> None:
    analysis_id = (await upload(client, user, jpeg(8))).json()["id"]
    data = {"status": "processing", "stage": "classify", "progress": 40}
    await publish_event(app.state.redis, analysis_id, "progress", data)
    for _ in range(2):  # the second read is served from the view cache
        live = (await client.get(f"{API}/analyses/{analysis_id}", headers=user.headers)).json()
        assert (live["status"], live["stage"], live["progress"]) == ("processing", "classify", 40)
    # The owner's cached view is not someone else's.
    assert_problem(await client.get(f"{API}/analyses/{analysis_id}", headers=other.headers), 404)

    result = {"category": "can", "confidence": 0.97, "candidates": [], "guidance": None}
    await complete(app, analysis_id, result)
    # As the pipeline does: the event after the commit is what tells readers to look again. It
    # reaches this process over pub/sub, so the change shows within moments, not at once.
    await publish_event(app.state.redis, analysis_id, "completed", {"status": "completed"})
    for _ in range(100):
        done = (await client.get(f"{API}/analyses/{analysis_id}", headers=user.headers)).json()
        if done["status"] == "completed":
            break
        await asyncio.sleep(0.02)
    assert (done["status"], done["progress"], done["result"]) == ("completed", 100, result)
    listed = (await client.get(f"{API}/analyses", headers=user.headers)).json()["items"][0]
    assert (listed["id"], listed["category"], listed["confidence"]) == (analysis_id, "can", 0.97)


async def test_status_follows_a_requeue_after_redis_lost_the_progress(
    app: FastAPI, client: AsyncClient, user: User, enqueued: list[uuid.UUID]
) -> None:
    """Polled at the guide stage, then Redis lost the analysis's hash and the reaper re-queued
    it: the poll says queued, not the lost run's stage, which this process had kept."""
    redis = app.state.redis
    analysis_id = (await upload(client, user, jpeg(9))).json()["id"]
    for stage, value in [("load", 5), ("classify", 20), ("guide", 70)]:
        data = {"status": "processing", "stage": stage, "progress": value}
        await publish_event(redis, analysis_id, "progress", data, attempt=1)
    live = (await client.get(f"{API}/analyses/{analysis_id}", headers=user.headers)).json()
    assert (live["status"], live["stage"], live["progress"]) == ("processing", "guide", 70)

    await redis.delete(state_key(analysis_id), events_key(analysis_id))
    async with app.state.sessionmaker() as session:
        await session.execute(
            update(Analysis)
            .where(Analysis.id == uuid.UUID(analysis_id))
            .values(status="queued", stage=None, progress=0, attempts=1)
        )
        await session.commit()
    await publish_requeued(redis, analysis_id, next_attempt=2)
    for _ in range(100):
        live = (await client.get(f"{API}/analyses/{analysis_id}", headers=user.headers)).json()
        if live["status"] == "queued":
            break
        await asyncio.sleep(0.02)
    assert (live["status"], live["stage"], live["progress"]) == ("queued", None, 0)


async def test_feedback_stores_a_correction_with_a_valid_code(
    app: FastAPI, client: AsyncClient, user: User, enqueued: list[uuid.UUID]
) -> None:
    analysis_id = (await upload(client, user, jpeg(9))).json()["id"]
    path = f"{API}/analyses/{analysis_id}/feedback"
    # Still queued: no answer to correct yet, and nothing stored.
    assert_problem(await client.post(path, headers=user.headers, json={"category": "can"}), 409)
    await complete(app, analysis_id, {"category": "plastic", "confidence": 0.7, "candidates": []})
    response = await client.post(path, headers=user.headers, json={"category": "pet_clear"})
    assert response.status_code == 201, response.text
    assert response.json()["category"] == "pet_clear"
    for bad in ({"category": "pizza"}, {"category": ""}, {}, {"category": "can", "x": 1}):
        assert_problem(await client.post(path, headers=user.headers, json=bad), 422)
    stored = await corrections_of(app, analysis_id)
    assert [(c.category, c.owner_id) for c in stored] == [("pet_clear", user.id)]


async def test_a_second_correction_replaces_the_first(
    app: FastAPI, client: AsyncClient, user: User, enqueued: list[uuid.UUID]
) -> None:
    analysis_id = (await upload(client, user, jpeg(10))).json()["id"]
    await complete(app, analysis_id, {"category": "plastic", "confidence": 0.6, "candidates": []})
    path = f"{API}/analyses/{analysis_id}/feedback"
    first = await client.post(path, headers=user.headers, json={"category": "general"})
    assert first.status_code == 201, first.text

    second = await client.post(path, headers=user.headers, json={"category": "pet_clear"})

    assert second.status_code == 200, second.text  # replaced, not created
    assert (second.json()["id"], second.json()["category"]) == (first.json()["id"], "pet_clear")
    assert second.json()["created_at"] >= first.json()["created_at"]
    stored = await corrections_of(app, analysis_id)
    assert [(c.category, c.owner_id) for c in stored] == [("pet_clear", user.id)]
    # Each correction tells users, which counts the analysis under it, the newest winning.
    announced = await corrected_events(app, analysis_id)
    assert [(e["category"], e["user_id"]) for e in announced] == [
        ("general", str(user.id)),
        ("pet_clear", str(user.id)),
    ]
    assert announced[-1]["corrected_at"] == second.json()["created_at"].replace("Z", "+00:00")


async def test_concurrent_corrections_leave_one_and_never_fail(
    app: FastAPI, client: AsyncClient, live_url: str, user: User, enqueued: list[uuid.UUID]
) -> None:
    analysis_id = (await upload(client, user, jpeg(11))).json()["id"]
    await complete(app, analysis_id, {"category": "can", "confidence": 0.5, "candidates": []})
    path = f"{API}/analyses/{analysis_id}/feedback"
    sent = ["scrap_metal", "can", "general", "plastic"] * 5
    # Real HTTP connections to uvicorn, all in flight at once.
    async with AsyncClient(base_url=live_url, timeout=60) as http:
        responses = await asyncio.gather(
            *(http.post(path, headers=user.headers, json={"category": c}) for c in sent)
        )

    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * 19 + [201], {r.text for r in responses if r.status_code >= 300}
    (stored,) = await corrections_of(app, analysis_id)
    assert stored.category in sent
    assert {r.json()["id"] for r in responses} == {str(stored.id)}


async def test_a_correction_holds_its_analysis_against_an_account_deletion(
    app: FastAPI,
    client: AsyncClient,
    user: User,
    enqueued: list[uuid.UUID],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`user.deleted` removes the owner's analyses: one removed between the ownership check and
    the correction's insert would fail the insert (a 500). The check holds the row instead."""
    analysis_id = (await upload(client, user, jpeg(12))).json()["id"]
    await complete(app, analysis_id, {"category": "can", "confidence": 0.5, "candidates": []})
    deletion: list[str] = []
    store = crud.set_correction

    async def deleted_meanwhile(*args: Any) -> Any:
        async with app.state.sessionmaker() as other, other.begin():
            await other.execute(text("SET LOCAL lock_timeout = '300ms'"))
            try:
                await other.execute(delete(Analysis).where(Analysis.id == uuid.UUID(analysis_id)))
                deletion.append("deleted")
            except DBAPIError:
                deletion.append("waited")
        return await store(*args)

    monkeypatch.setattr(crud, "set_correction", deleted_meanwhile)
    path = f"{API}/analyses/{analysis_id}/feedback"

    response = await client.post(path, headers=user.headers, json={"category": "scrap_metal"})

    assert response.status_code == 201, response.text
    assert deletion == ["waited"]


@pytest.mark.parametrize(
    ("suffix", "handler", "parameters", "media_type"),
    [
        ("", poll_analysis, ["analysis_id"], "application/json"),
        ("/events", stream_events, ["analysis_id", "Last-Event-ID"], "text/event-stream"),
    ],
)
async def test_plain_routes_check_the_id_and_the_token_and_are_documented(
    app: FastAPI,
    client: AsyncClient,
    user: User,
    suffix: str,
    handler: object,
    parameters: list[str],
    media_type: str,
) -> None:
    """The status poll and the event stream are served without FastAPI's routing and
    dependency resolution: they still refuse what the other routes refuse, and the API
    description still lists them."""
    malformed = assert_problem(
        await client.get(f"{API}/analyses/not-a-uuid{suffix}", headers=user.headers), 422
    )
    assert "analysis_id" in str(malformed)
    assert_problem(await client.get(f"{API}/analyses/not-a-uuid{suffix}"), 401)  # token first
    assert_problem(await client.get(f"{API}/analyses/{uuid.uuid4()}{suffix}"), 401)
    path = f"{API}/analyses/{uuid.uuid4()}{suffix}"
    assert_problem(await client.get(path, headers=user.headers), 404)
    assert_problem(await client.delete(path, headers=user.headers), 405)
    request = {"type": "http", "method": "GET", "path": path, "root_path": ""}
    served_by = next(r for r in app.router.routes if r.matches(request)[0] == Match.FULL)
    assert getattr(served_by, "endpoint", None) is handler  # the plain route, found first
    operation = (await client.get(f"{API}/openapi.json")).json()["paths"][
        f"{API}/analyses/{{analysis_id}}{suffix}"
    ]["get"]
    assert media_type in operation["responses"]["200"]["content"]
    assert [p["name"] for p in operation["parameters"]] == parameters


async def test_a_conflict_with_a_row_since_deleted_is_a_409(
    client: AsyncClient, user: User, enqueued: list[uuid.UUID], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The insert conflicted, and the row it conflicted with went before it could be read (its
    owner's account was deleted meanwhile): a problem to send again, not a crash."""

    async def conflicting(*args: object, **kwargs: object) -> None:
        return None  # ON CONFLICT DO NOTHING: another request's row holds the key or upload

    monkeypatch.setattr(crud, "insert_analysis", conflicting)
    assert_problem(await upload(client, user, jpeg(27)), 409)
    assert enqueued == []
