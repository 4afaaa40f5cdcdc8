"""Export and deletion of a person's account."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import AsyncClient, Response
from redis.asyncio import Redis
from sqlalchemy import func, select, text
from starlette.types import Message

from ecosort_common.events import Event
from ecosort_common.testing import problem_schema_name
from ecosort_users import crud
from ecosort_users.config import Settings
from ecosort_users.handlers import event_handlers
from ecosort_users.models import AnalysisRecord, Profile, outbox
from ecosort_users.schemas import ExportOut

ME = "/api/v1/users/me"
Auth = Callable[[uuid.UUID], dict[str, str]]
Deliver = Callable[[Event], Awaitable[None]]
MakeEvent = Callable[..., Event]
ArriveAfter = Callable[[str, Event], Callable[[], bool]]


def analysis(user_id: uuid.UUID, category: str = "glass_bottle") -> dict[str, object]:
    return {
        "analysis_id": str(uuid.uuid4()),
        "user_id": str(user_id),
        "category": category,
        "confidence": 0.8,
        "completed_at": datetime.now(UTC).isoformat(),
    }


async def test_export_holds_profile_history_and_stats(
    client: AsyncClient, auth: Auth, make_event: MakeEvent, apply_event: Deliver
) -> None:
    user_id = uuid.uuid4()
    await client.patch(ME, headers=auth(user_id), json={"nickname": "내보내기", "region": "11440"})
    for _ in range(2):
        await apply_event(make_event("analysis.completed", analysis(user_id)))
    response = await client.get(f"{ME}/export", headers=auth(user_id))
    assert response.status_code == 200
    assert "attachment" in response.headers["content-disposition"]
    export = response.json()
    assert export["profile"]["nickname"] == "내보내기"
    assert export["profile"]["region"]["code"] == "11440"
    assert len(export["history"]) == 2
    assert export["stats"]["total_analyses"] == 2


def correction(of: dict[str, object], category: str, at: datetime) -> dict[str, object]:
    return {
        "analysis_id": of["analysis_id"],
        "user_id": of["user_id"],
        "category": category,
        "corrected_at": at.isoformat(),
    }


async def test_export_holds_the_corrections_applied_and_pending(
    client: AsyncClient, auth: Auth, make_event: MakeEvent, apply_event: Deliver
) -> None:
    """PIPA's right of access: when the person corrected an analysis, and the corrections whose
    analyses have not arrived yet, are theirs too."""
    user_id, neighbour = uuid.uuid4(), uuid.uuid4()
    at = datetime(2026, 11, 28, 9, 30, 15, 123456, tzinfo=UTC)
    corrected, untouched, awaited = analysis(user_id), analysis(user_id), analysis(user_id)
    for payload in (corrected, untouched):
        await apply_event(make_event("analysis.completed", payload))
    await apply_event(make_event("analysis.corrected", correction(corrected, "can", at)))
    # `awaited`'s analysis.completed has not arrived: its correction waits for it.
    await apply_event(make_event("analysis.corrected", correction(awaited, "vinyl", at)))
    theirs = analysis(neighbour)
    await apply_event(make_event("analysis.completed", theirs))
    await apply_event(make_event("analysis.corrected", correction(theirs, "paper", at)))
    await apply_event(
        make_event("analysis.corrected", correction(analysis(neighbour), "paper", at))
    )

    response = await client.get(f"{ME}/export", headers=auth(user_id))
    assert response.status_code == 200
    export = response.json()
    ExportOut.model_validate(export)
    history = {
        item["analysis_id"]: (item["category"], item["corrected_at"]) for item in export["history"]
    }
    assert history == {
        corrected["analysis_id"]: ("can", "2026-11-28T09:30:15.123456Z"),
        untouched["analysis_id"]: ("glass_bottle", None),
    }
    assert export["pending_corrections"] == [
        {
            "analysis_id": awaited["analysis_id"],
            "category": "vinyl",
            "corrected_at": "2026-11-28T09:30:15.123456Z",
        }
    ]
    page = (await client.get(f"{ME}/history", headers=auth(user_id))).json()
    assert export["history"] == page["items"]


async def test_export_shows_a_correction_once_while_its_analysis_arrives(
    client: AsyncClient,
    auth: Auth,
    make_event: MakeEvent,
    apply_event: Deliver,
    arrive_after: ArriveAfter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The analysis arriving while the export runs takes its pending correction along: read from
    one snapshot, the export lists the correction as pending, not also in the history."""
    user_id = uuid.uuid4()
    awaited = analysis(user_id)
    await apply_event(
        make_event("analysis.corrected", correction(awaited, "can", datetime.now(UTC)))
    )
    # Right after the pending corrections are read: the analysis commits.
    arrived = arrive_after("FROM pending_corrections", make_event("analysis.completed", awaited))
    export = (await client.get(f"{ME}/export", headers=auth(user_id))).json()
    assert arrived()
    assert [p["analysis_id"] for p in export["pending_corrections"]] == [awaited["analysis_id"]]
    assert export["history"] == [] and export["stats"]["total_analyses"] == 0
    monkeypatch.undo()
    later = (await client.get(f"{ME}/export", headers=auth(user_id))).json()
    assert [(i["analysis_id"], i["category"]) for i in later["history"]] == [
        (awaited["analysis_id"], "can")
    ]
    assert later["pending_corrections"] == []


async def _published_deletion(redis_url: str, user_id: uuid.UUID) -> bool:
    async with Redis.from_url(redis_url, decode_responses=True) as redis:
        for _ in range(50):
            entries = await redis.xrange("events:user.deleted")
            if any(json.loads(f["payload"]) == {"user_id": str(user_id)} for _, f in entries):
                return True
            await asyncio.sleep(0.1)
    return False


async def test_delete_erases_data_and_announces_user_deleted(
    client: AsyncClient,
    auth: Auth,
    app: FastAPI,
    settings: Settings,
    make_event: MakeEvent,
    apply_event: Deliver,
) -> None:
    user_id, neighbour = uuid.uuid4(), uuid.uuid4()
    await apply_event(make_event("analysis.completed", analysis(user_id)))
    await apply_event(make_event("analysis.completed", analysis(neighbour)))

    response = await client.delete(ME, headers=auth(user_id))
    assert response.status_code == 204

    async with app.state.sessionmaker() as session:
        staged = (
            (
                await session.execute(
                    select(outbox.c.payload).where(outbox.c.event_type == "user.deleted")
                )
            )
            .scalars()
            .all()
        )
    assert {"user_id": str(user_id)} in staged
    assert await _published_deletion(settings.redis_url, user_id), "the relay never published"

    gone = await client.get(ME, headers=auth(user_id))
    assert gone.status_code == 410
    assert gone.headers["content-type"] == "application/problem+json"
    assert (await client.delete(ME, headers=auth(user_id))).status_code == 410
    # A late event for the deleted account must not bring it back.
    await apply_event(make_event("analysis.completed", analysis(user_id)))
    await apply_event(make_event("user.registered", {"user_id": str(user_id)}))
    assert (await client.get(f"{ME}/history", headers=auth(user_id))).status_code == 410
    # Nobody else's data was touched.
    stats = (await client.get(f"{ME}/stats", headers=auth(neighbour))).json()
    assert stats["total_analyses"] == 1


async def _body_pieces(app: FastAPI, path: str, headers: dict[str, str]) -> list[bytes]:
    """GET path from the ASGI app itself, and the pieces its body was sent in (httpx's ASGI
    transport joins them)."""
    pieces: list[bytes] = []
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "server": ("test", 80),
        "client": ("127.0.0.1", 50000),
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
    }

    async def receive() -> Message:
        await asyncio.Event().wait()  # the client stays until the response ends
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            assert message["status"] == 200
        elif message.get("body"):
            pieces.append(message["body"])

    await app(scope, receive, send)
    return pieces


async def test_export_is_streamed_in_batches_of_the_history(
    client: AsyncClient,
    auth: Auth,
    app: FastAPI,
    make_event: MakeEvent,
    apply_event: Deliver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    user_id = uuid.uuid4()
    for _ in range(5):
        await apply_event(make_event("analysis.completed", analysis(user_id)))
    monkeypatch.setattr(crud, "EXPORT_BATCH", 2, raising=False)
    pieces = await _body_pieces(app, f"{ME}/export", auth(user_id))
    # The document's start, three batches of the history, its end: never all of it at once.
    assert len(pieces) == 5
    export = json.loads(b"".join(pieces))
    assert list(export) == list(ExportOut.model_fields)
    ExportOut.model_validate(export)
    page = (await client.get(f"{ME}/history", headers=auth(user_id))).json()
    assert export["history"] == page["items"]  # newest first, as the history pages
    assert export["stats"]["total_analyses"] == 5


async def _rows_of(app: FastAPI, user_id: uuid.UUID) -> tuple[int, int]:
    """(profiles, history rows) the person still has."""
    async with app.state.sessionmaker() as session:
        profiles = await session.scalar(
            select(func.count()).select_from(Profile).where(Profile.user_id == user_id)
        )
        history = await session.scalar(
            select(func.count())
            .select_from(AnalysisRecord)
            .where(AnalysisRecord.user_id == user_id)
        )
    return profiles or 0, history or 0


async def _blocked_or_done(app: FastAPI, task: asyncio.Future[Any]) -> None:
    """Wait until the task has finished or waits for a lock in the database."""
    waiting = text(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    async with app.state.engine.connect() as conn:
        for _ in range(100):
            if task.done() or await conn.scalar(waiting):
                return
            await conn.rollback()  # a transaction keeps the pg_stat_activity it first read
            await asyncio.sleep(0.05)


@asynccontextmanager
async def _deletion_in_flight(app: FastAPI, user_id: uuid.UUID) -> AsyncIterator[None]:
    """The account's deletion, done but not committed, while the body runs."""
    async with app.state.sessionmaker() as session, session.begin():
        await crud.delete_account(session, user_id)
        yield


@pytest.mark.parametrize("write", ["GET /me", "PATCH /me", "analysis.completed", "user.registered"])
async def test_a_write_meeting_a_deletion_waits_for_it_and_leaves_nothing(
    client: AsyncClient,
    auth: Auth,
    app: FastAPI,
    make_event: MakeEvent,
    apply_event: Deliver,
    write: str,
) -> None:
    """Each write checked the tombstone, then wrote: a deletion committing in between was
    undone (a profile created, or history recorded, after the 204)."""
    user_id = uuid.uuid4()
    requests: dict[str, Callable[[], Awaitable[Any]]] = {
        "GET /me": lambda: client.get(ME, headers=auth(user_id)),
        "PATCH /me": lambda: client.patch(ME, headers=auth(user_id), json={"nickname": "늦게"}),
        "analysis.completed": lambda: apply_event(
            make_event("analysis.completed", analysis(user_id))
        ),
        "user.registered": lambda: apply_event(
            make_event("user.registered", {"user_id": str(user_id), "nickname": "늦게"})
        ),
    }
    async with _deletion_in_flight(app, user_id):
        writing = asyncio.ensure_future(requests[write]())
        await _blocked_or_done(app, writing)
    answer = await writing
    if isinstance(answer, Response):
        assert answer.status_code == 410, answer.text
        assert answer.headers["content-type"] == "application/problem+json"
    assert await _rows_of(app, user_id) == (0, 0)


async def test_a_deletion_waits_for_a_write_in_flight(
    client: AsyncClient,
    auth: Auth,
    app: FastAPI,
    settings: Settings,
    make_event: MakeEvent,
    apply_event: Deliver,
) -> None:
    """A DELETE does not see rows of transactions still open: it must wait for them."""
    user_id = uuid.uuid4()
    await apply_event(make_event("analysis.completed", analysis(user_id)))
    late = make_event("analysis.completed", analysis(user_id))
    async with app.state.sessionmaker() as session, session.begin():
        await event_handlers(settings)[late.type](session, late)
        deleting = asyncio.create_task(client.delete(ME, headers=auth(user_id)))
        await _blocked_or_done(app, deleting)
    assert (await deleting).status_code == 204
    assert await _rows_of(app, user_id) == (0, 0)


async def test_concurrent_deletions_delete_and_announce_once(
    client: AsyncClient, auth: Auth, app: FastAPI
) -> None:
    user_id = uuid.uuid4()
    await client.get(ME, headers=auth(user_id))
    answers = await asyncio.gather(*(client.delete(ME, headers=auth(user_id)) for _ in range(4)))
    assert sorted(a.status_code for a in answers) == [204, 410, 410, 410]
    async with app.state.sessionmaker() as session:
        announced = await session.scalar(
            select(func.count())
            .select_from(outbox)
            .where(outbox.c.payload["user_id"].astext == str(user_id))
        )
    assert announced == 1


async def test_the_openapi_document_says_every_me_route_may_answer_410(
    client: AsyncClient,
) -> None:
    document = (await client.get("/api/v1/users/openapi.json")).json()
    for path, operations in document["paths"].items():
        if path.startswith(ME):
            for method, operation in operations.items():
                gone = operation["responses"]["410"]
                assert problem_schema_name(gone) == "Problem", f"{method} {path}"


async def test_the_openapi_document_says_which_profile_fields_may_be_null(
    client: AsyncClient,
) -> None:
    """A generated client must not send null for what the server refuses as null."""
    document = (await client.get("/api/v1/users/openapi.json")).json()
    fields = document["components"]["schemas"]["ProfileUpdate"]["properties"]
    assert fields["nickname"]["type"] == "string" and fields["locale"]["type"] == "string"
    assert {"type": "null"} in fields["region"]["anyOf"]
