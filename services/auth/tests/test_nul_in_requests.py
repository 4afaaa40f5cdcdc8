"""A NUL character in any string of a request body is a 422 problem: PostgreSQL's text cannot hold
U+0000, so letting it through ends in a 500 at the INSERT or the query."""

from __future__ import annotations

from typing import Any

import pytest
from auth_test_helpers import assert_problem
from httpx import AsyncClient

NUL = "a\x00b"
DEV_LOGIN = {"subject": "nul-check", "nickname": "tester"}


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/api/v1/auth/dev/login", {**DEV_LOGIN, "subject": NUL}, "subject"),
        ("/api/v1/auth/dev/login", {**DEV_LOGIN, "nickname": NUL}, "nickname"),
        ("/api/v1/auth/dev/login", {**DEV_LOGIN, "device": NUL}, "device"),
        ("/api/v1/auth/kakao/token", {"access_token": "sdk", "device": NUL}, "device"),
        ("/api/v1/auth/kakao/token", {"access_token": NUL}, "access_token"),
        ("/api/v1/auth/google/token", {"id_token": NUL}, "id_token"),
        ("/api/v1/auth/refresh", {"refresh_token": NUL}, "refresh_token"),
        ("/api/v1/auth/logout", {"refresh_token": NUL}, "refresh_token"),
    ],
)
async def test_a_nul_in_a_request_string_is_a_422(
    client: AsyncClient, path: str, body: dict[str, Any], field: str
) -> None:
    problem = assert_problem(await client.post(path, json=body), 422)
    assert [error["loc"] for error in problem["errors"]] == [["body", field]]
    assert "NUL" in problem["errors"][0]["msg"]


async def test_a_nul_in_the_web_flows_device_is_a_422(client: AsyncClient) -> None:
    response = await client.get("/api/v1/auth/kakao/authorize", params={"device": NUL})
    problem = assert_problem(response, 422)
    assert [error["loc"] for error in problem["errors"]] == [["query", "device"]]


async def test_other_control_characters_still_sign_in(client: AsyncClient) -> None:
    # Only U+0000 is beyond what PostgreSQL stores; the rest is the nickname rule's business.
    response = await client.post(
        "/api/v1/auth/dev/login", json={**DEV_LOGIN, "device": "tab\there"}
    )
    assert response.status_code == 200, response.text
