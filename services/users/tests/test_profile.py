"""GET/PATCH /me: lazy creation, validation as problem+json, and isolation between people."""

from __future__ import annotations

import unicodedata
import uuid
from collections.abc import Callable

import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import text

from ecosort_users.regions import InvalidRegion, parse_region

ME = "/api/v1/users/me"
Auth = Callable[[uuid.UUID], dict[str, str]]


async def test_me_needs_a_token(client: AsyncClient) -> None:
    response = await client.get(ME)
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"


async def test_first_get_creates_a_default_profile(client: AsyncClient, auth: Auth) -> None:
    user_id = uuid.uuid4()
    response = await client.get(ME, headers=auth(user_id))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"] == str(user_id)
    assert body["locale"] == "ko-KR"
    assert body["nickname"] is None and body["region"] is None


async def test_patch_changes_only_the_fields_given(client: AsyncClient, auth: Auth) -> None:
    headers = auth(uuid.uuid4())
    response = await client.patch(
        ME,
        headers=headers,
        json={"nickname": "  분리왕 ", "region": "서울 마포구", "locale": "en_us"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["nickname"] == "분리왕"
    assert body["region"] == {"code": "11440", "name": "서울특별시 마포구"}
    assert body["locale"] == "en-US"

    response = await client.patch(ME, headers=headers, json={"region": "11110"})
    assert response.json()["region"] == {"code": "11110", "name": "서울특별시 종로구"}
    assert response.json()["nickname"] == "분리왕"

    # As a keyboard or a paste may send it: decomposed jamo, the same 구.
    nfd = unicodedata.normalize("NFD", "서울 종로구")
    response = await client.patch(ME, headers=headers, json={"region": nfd})
    assert response.status_code == 200, response.text
    assert response.json()["region"] == {"code": "11110", "name": "서울특별시 종로구"}

    response = await client.patch(ME, headers=headers, json={"region": None})
    assert response.json()["region"] is None
    assert (await client.get(ME, headers=headers)).json()["locale"] == "en-US"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"nickname": ""}, "nickname"),
        ({"nickname": "x" * 31}, "nickname"),
        ({"nickname": "a\u0000b"}, "nickname"),
        ({"nickname": None}, "nickname"),
        ({"region": "중구"}, "region"),
        ({"region": "99999"}, "region"),
        ({"region": "서울특별시 없는구"}, "region"),
        ({"locale": "fr-FR"}, "locale"),
        ({"email": "x@example.com"}, "email"),
    ],
)
async def test_bad_patch_is_a_422_problem(
    client: AsyncClient, auth: Auth, body: dict[str, object], field: str
) -> None:
    response = await client.patch(ME, headers=auth(uuid.uuid4()), json=body)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == 422
    assert any(field in error["loc"] for error in problem["errors"])


async def test_patch_with_a_non_json_body_is_a_problem(client: AsyncClient, auth: Auth) -> None:
    response = await client.patch(
        ME, headers={**auth(uuid.uuid4()), "content-type": "application/json"}, content=b"{"
    )
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"


async def test_people_only_ever_see_their_own_profile(client: AsyncClient, auth: Auth) -> None:
    alice, bob = uuid.uuid4(), uuid.uuid4()
    await client.patch(ME, headers=auth(alice), json={"nickname": "alice"})
    bobs = (await client.get(ME, headers=auth(bob))).json()
    assert bobs["id"] == str(bob) and bobs["nickname"] is None


async def _row_version(app: FastAPI, user_id: uuid.UUID) -> str | None:
    async with app.state.sessionmaker() as session:
        version: str | None = await session.scalar(
            text("SELECT xmin::text FROM profiles WHERE user_id = :user_id"), {"user_id": user_id}
        )
    return version


async def test_reading_does_not_write_the_profile(
    client: AsyncClient, auth: Auth, app: FastAPI
) -> None:
    """Every request reads the profile: rewritten each time, it took a new row version per
    request, and one person's concurrent requests queued on its row lock."""
    user_id = uuid.uuid4()
    await client.get(ME, headers=auth(user_id))  # creates it
    created = await _row_version(app, user_id)
    for path in ("", "/history", "/stats", "/export"):
        assert (await client.get(ME + path, headers=auth(user_id))).status_code == 200
    assert await _row_version(app, user_id) == created
    await client.patch(ME, headers=auth(user_id), json={"nickname": "바뀜"})
    assert await _row_version(app, user_id) != created


@pytest.mark.parametrize(
    ("text", "code", "name"),
    [
        ("11440", "11440", "서울특별시 마포구"),
        ("마포구", "11440", "서울특별시 마포구"),
        ("서울특별시  중구", "11140", "서울특별시 중구"),
        ("세종", "36110", "세종특별자치시"),
        ("경기도 수원시 팔달구", None, "경기도 수원시 팔달구"),
        ("부산 중구", None, "부산광역시 중구"),
        ("41135", "41135", "경기도"),
        # Decomposed (NFD) Hangul and full-width digits are the same name and code.
        (unicodedata.normalize("NFD", "서울특별시 마포구"), "11440", "서울특별시 마포구"),
        (unicodedata.normalize("NFD", "경기 수원시"), None, "경기도 수원시"),
        ("１１４４０", "11440", "서울특별시 마포구"),
    ],
)
def test_region_names_and_codes_are_canonicalised(text: str, code: str | None, name: str) -> None:
    region = parse_region(text)
    assert (region.code, region.name) == (code, name)


@pytest.mark.parametrize(
    "text",
    ["", "1144", "11000", "88123", "중구", "Seoul", "서울 강남", "41\u0661\u0661\u0660"],
)
def test_region_refusals(text: str) -> None:
    with pytest.raises(InvalidRegion):
        parse_region(text)
