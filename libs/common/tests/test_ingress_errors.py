"""What ingress-nginx gets from a service when it asks for the page of an error it made itself
(`custom-http-errors` with the service as `default-backend`: see ecosort_common.ingress_errors)."""

from __future__ import annotations

import pytest
from httpx import AsyncClient

from ecosort_common.ingress_errors import INGRESS_ERROR_CODES


def asked_by_ingress(code: str, uri: str = "/api/v1/demo/echo?x=1") -> dict[str, str]:
    # The headers ingress-nginx's error location sets (its template's CUSTOM_ERRORS).
    return {"X-Code": code, "X-Original-URI": uri, "X-Request-ID": "ingress-req-1"}


@pytest.mark.parametrize("status", INGRESS_ERROR_CODES)
async def test_the_ingress_controllers_own_errors_become_problems(
    client: AsyncClient, status: int
) -> None:
    # The method is the client's: a POST over the body limit comes as a POST.
    answer = await client.post("/", headers=asked_by_ingress(str(status)), content=b"")
    assert answer.status_code == status
    assert answer.headers["content-type"] == "application/problem+json"
    body = answer.json()
    assert body["status"] == status
    assert body["instance"] == "/api/v1/demo/echo"  # the client's path, not the error page's
    assert body["request_id"] == "ingress-req-1"
    assert ("retry-after" in answer.headers) == (status == 502)


@pytest.mark.parametrize("code", [None, "200", "404", "429", "503", "abc", "4130"])
async def test_nothing_else_lives_at_the_root(client: AsyncClient, code: str | None) -> None:
    headers = asked_by_ingress(code) if code is not None else {}
    answer = await client.get("/", headers=headers)
    assert answer.status_code == 404
    assert answer.headers["content-type"] == "application/problem+json"
