"""One nickname rule for both ways a nickname arrives: PATCH /me refuses what does not fit, the
`user.registered` event of a sign-in drops it. Emoji sequences and joined scripts fit; control,
private-use, unassigned and bidirectional-override characters do not."""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable

import pytest
from httpx import AsyncClient

from ecosort_common.events import Event

ME = "/api/v1/users/me"
Auth = Callable[[uuid.UUID], dict[str, str]]
Deliver = Callable[[Event], Awaitable[None]]

FITTING = [
    "👨\u200d👩\u200d👧",  # family: emoji joined by ZWJ
    "🏳\ufe0f\u200d🌈",  # rainbow flag: variation selector and ZWJ
    "می\u200cخواهم",  # Persian, with the ZWNJ its spelling needs
    "☺\ufe0f 분리왕",
    "👩🏽\u200d💻",  # skin tone modifier, then ZWJ
    "क्\u200dष",  # Devanagari: ZWJ after a virama
    "1\ufe0f\u20e3",  # keycap
    "🏴\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f",  # Scotland: tags
]
UNFIT = [
    ("bell\x07", "a control character"),
    ("a\ue000b", "private use"),
    ("a\u0378b", "unassigned"),
    ("a\uffffb", "a noncharacter"),
    ("admin\u202egnp", "a right-to-left override"),
    ("a\u2066b\u2069", "a left-to-right isolate"),
    ("\u200b", "a zero-width space alone"),
    ("\u2060\u2060", "word joiners alone"),
    ("\ufeff", "a byte order mark alone"),
    ("\xad", "a soft hyphen alone"),
    ("admin\u200b", "a zero-width space after a name"),
    ("ad\u200bmin", "a zero-width space inside a name"),
    ("\u200d", "a ZWJ alone"),
    ("\u200c분리왕", "a ZWNJ at the start"),
    ("분리왕\u200d", "a ZWJ at the end"),
    ("a\u200d\u200db", "two ZWJ in a row"),
    ("\u3164", "a Hangul filler alone"),
    ("\ufe0f", "a variation selector alone"),
    ("a\U000e0067b", "a tag character without a flag"),
    ("🏴\U000e0067\U000e0062", "flag tags without their cancel tag"),
    ("분리\u2028왕", "a line separator inside a name"),
    ("분리\u2029왕", "a paragraph separator inside a name"),
]


@pytest.mark.parametrize("nickname", FITTING)
async def test_patch_takes_joined_emoji_and_scripts(
    client: AsyncClient, auth: Auth, nickname: str
) -> None:
    headers = auth(uuid.uuid4())
    response = await client.patch(ME, headers=headers, json={"nickname": nickname})
    assert response.status_code == 200, response.text
    assert (await client.get(ME, headers=headers)).json()["nickname"] == nickname


@pytest.mark.parametrize(("nickname", "why"), UNFIT, ids=[why for _, why in UNFIT])
async def test_patch_refuses_what_does_not_fit(
    client: AsyncClient, auth: Auth, nickname: str, why: str
) -> None:
    response = await client.patch(ME, headers=auth(uuid.uuid4()), json={"nickname": nickname})
    assert response.status_code == 422, f"{why}: {response.text}"
    assert response.headers["content-type"] == "application/problem+json"
    assert [error["loc"] for error in response.json()["errors"]] == [["body", "nickname"]]


async def test_patch_refuses_a_lone_surrogate(client: AsyncClient, auth: Auth) -> None:
    # JSON can spell one, though no UTF-8 can: the escape reaches Python as it is.
    body = '{"nickname": "a\\ud800b"}'
    headers = {**auth(uuid.uuid4()), "content-type": "application/json"}
    response = await client.patch(ME, headers=headers, content=body)
    assert response.status_code == 422, response.text


async def _registered(
    client: AsyncClient,
    auth: Auth,
    make_event: Callable[..., Event],
    apply_event: Deliver,
    nickname: str,
) -> str | None:
    user_id = uuid.uuid4()
    payload = {"user_id": str(user_id), "provider": "kakao", "nickname": nickname}
    # Through JSON, as the event comes off the stream.
    await apply_event(make_event("user.registered", json.loads(json.dumps(payload))))
    stored: str | None = (await client.get(ME, headers=auth(user_id))).json()["nickname"]
    return stored


@pytest.mark.parametrize("nickname", FITTING)
async def test_sign_in_keeps_a_fitting_nickname(
    client: AsyncClient,
    auth: Auth,
    make_event: Callable[..., Event],
    apply_event: Deliver,
    nickname: str,
) -> None:
    assert await _registered(client, auth, make_event, apply_event, nickname) == nickname


@pytest.mark.parametrize(
    ("nickname", "stored"),
    [
        ("bell\x07", "bell"),
        ("a\x00b\ue000c\u0378d", "abcd"),
        ("admin\u202egnp.exe", "admingnp.exe"),
        ("\u2066 분리왕 \u2069", "분리왕"),
        ("\x07\x1b", None),
        ("\u200b", None),
        ("\u2060\u2060", None),
        ("\ufeff", None),
        ("\xad", None),
        ("\u3164", None),
        ("admin\u200b", "admin"),
        ("\u200d분리왕\u200c", "분리왕"),
        ("a\U000e0067b", "ab"),
        ("분리\u2028왕", "분리왕"),
        ("가" * 29 + "\u200d👩", "가" * 29),  # the cut leaves a joiner at the end
        ("가" * 29 + "\x07" + "나나", "가" * 29 + "나"),  # cut to length after the cleaning
    ],
)
async def test_sign_in_drops_what_does_not_fit(
    client: AsyncClient,
    auth: Auth,
    make_event: Callable[..., Event],
    apply_event: Deliver,
    nickname: str,
    stored: str | None,
) -> None:
    assert await _registered(client, auth, make_event, apply_event, nickname) == stored
