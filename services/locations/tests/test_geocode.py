"""/geocode through Kakao Local, against recorded answers in Kakao's documented format."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import respx
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient
from pydantic import SecretStr

from ecosort_common.testing import TokenIssuer
from ecosort_locations.config import Settings
from ecosort_locations.main import create_app

Headers = Callable[[], dict[str, str]]

GEOCODE = "/api/v1/locations/geocode"
KAKAO = "https://dapi.kakao.com/v2/local/search/address.json"
# developers.kakao.com, 로컬 API, 주소 검색하기: the answer for "전북 삼성동 100".
KAKAO_ANSWER: dict[str, Any] = {
    "meta": {"total_count": 1, "pageable_count": 1, "is_end": True},
    "documents": [
        {
            "address_name": "전북 익산시 부송동 100",
            "y": "35.97664845766847",
            "x": "126.99597295767953",
            "address_type": "REGION_ADDR",
            "address": {
                "address_name": "전북 익산시 부송동 100",
                "region_1depth_name": "전북",
                "region_2depth_name": "익산시",
                "region_3depth_name": "부송동",
                "region_3depth_h_name": "삼성동",
                "h_code": "4514069000",
                "b_code": "4514013400",
                "mountain_yn": "N",
                "main_address_no": "100",
                "sub_address_no": "",
                "x": "126.99597295767953",
                "y": "35.97664845766847",
            },
            "road_address": {
                "address_name": "전북 익산시 망산길 11-17",
                "region_1depth_name": "전북",
                "region_2depth_name": "익산시",
                "region_3depth_name": "부송동",
                "road_name": "망산길",
                "underground_yn": "N",
                "main_building_no": "11",
                "sub_building_no": "17",
                "building_name": "",
                "zone_no": "54547",
                "y": "35.976749396987046",
                "x": "126.99599512792346",
            },
        }
    ],
}


LIMIT = 3  # lookups a minute per user, in keyed_app


@pytest.fixture(scope="module")
async def keyed_app(settings: Settings) -> AsyncIterator[FastAPI]:
    application = create_app(
        settings.model_copy(
            update={
                "kakao_rest_api_key": SecretStr("test-kakao-key"),
                "geocode_rate_limit_per_minute": LIMIT,
            }
        )
    )
    async with LifespanManager(application, startup_timeout=30):
        yield application


@pytest.fixture
async def keyed(keyed_app: FastAPI) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(transport=ASGITransport(app=keyed_app), base_url="http://t") as http:
        yield http


def kakao_mock() -> respx.MockRouter:
    """Kakao Local answers as recorded; the tokens' JWKS still comes from the real local issuer.
    Each test counts Kakao's calls itself: the JWKS route is called only while uncached."""
    router = respx.mock(assert_all_called=False)
    router.route(host="127.0.0.1").pass_through()
    return router


@pytest.fixture
def auth(token_issuer: TokenIssuer) -> Headers:
    """Authorization headers for a new user each call (the rate limit is per user)."""
    return lambda: {"Authorization": f"Bearer {token_issuer.token(uuid.uuid4())}"}


@pytest.fixture
def frozen_minute(monkeypatch: pytest.MonkeyPatch) -> float:
    """The limit's window is the clock's minute: one that ends mid-test would reset it."""
    now = time.time()
    monkeypatch.setattr(time, "time", lambda: now)
    return now


async def test_without_a_key_geocoding_is_503_not_configured(
    client: AsyncClient, auth: Headers
) -> None:
    response = await client.get(GEOCODE, params={"query": "전북 삼성동 100"}, headers=auth())
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    assert "not configured" in response.json()["detail"]
    # A malformed query is still the client's to fix, whether or not geocoding is configured.
    blank = await client.get(GEOCODE, params={"query": "  "}, headers=auth())
    assert blank.status_code == 422


async def test_an_address_is_found_and_cached(keyed: AsyncClient, auth: Headers) -> None:
    query = f"전북 삼성동 100 {uuid.uuid4().hex[:6]}"  # its own cache entry
    with kakao_mock() as kakao:
        route = kakao.get(KAKAO).mock(return_value=httpx.Response(200, json=KAKAO_ANSWER))
        first = await keyed.get(GEOCODE, params={"query": query}, headers=auth())
        second = await keyed.get(GEOCODE, params={"query": query}, headers=auth())
    assert first.status_code == 200, first.text
    assert first.json() == second.json()
    item = first.json()["items"][0]
    assert item["lat"] == pytest.approx(35.97664845766847)
    assert item["lng"] == pytest.approx(126.99597295767953)
    assert item["road_address"] == "전북 익산시 망산길 11-17"
    assert (item["region_2depth"], item["b_code"]) == ("익산시", "4514013400")
    assert route.call_count == 1
    sent = route.calls[0].request
    assert sent.headers["authorization"] == "KakaoAK test-kakao-key"
    assert sent.url.params["query"] == query


THROTTLED = {"errorType": "RequestThrottled", "message": "API limit has been exceeded."}


@pytest.mark.parametrize(
    ("kakao_answer", "status", "retry_after"),
    [
        (
            httpx.Response(
                401, json={"errorType": "AccessDeniedError", "message": "cannot find appkey"}
            ),
            502,
            None,
        ),
        (httpx.Response(429, json=THROTTLED, headers={"Retry-After": "120"}), 503, "120"),
        (httpx.Response(429, json=THROTTLED), 503, "60"),
        (httpx.Response(500, text="<html>oops</html>"), 502, None),
        (httpx.Response(200, json={"unexpected": True}), 502, None),
        (httpx.Response(500, json=["not", "an", "error", "object"]), 502, None),
        (httpx.ReadTimeout("slow"), 504, None),
    ],
)
async def test_kakao_failures_are_problems_not_stack_traces(
    keyed: AsyncClient, auth: Headers, kakao_answer: Any, status: int, retry_after: str | None
) -> None:
    with kakao_mock() as kakao:
        kakao.get(KAKAO).mock(side_effect=[kakao_answer])
        response = await keyed.get(
            GEOCODE, params={"query": f"어딘가 {uuid.uuid4().hex[:6]}"}, headers=auth()
        )
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert "Traceback" not in response.text
    assert response.headers.get("retry-after") == retry_after


def odd(document: Any) -> dict[str, Any]:
    return {"meta": {"total_count": 1}, "documents": [document]}


WELL_FORMED = KAKAO_ANSWER["documents"][0]


@pytest.mark.parametrize(
    "answer",
    [
        odd("x"),
        odd({**WELL_FORMED, "address": "a string"}),
        odd({**WELL_FORMED, "road_address": ["a list"]}),
        odd({**WELL_FORMED, "address": {**WELL_FORMED["address"], "b_code": 4514013400}}),
        odd({**WELL_FORMED, "y": "NaN"}),
        odd({**WELL_FORMED, "y": "Infinity"}),
        odd({**WELL_FORMED, "x": None}),
        odd({**WELL_FORMED, "y": "0", "x": "0"}),  # not in Korea: Kakao Local has only Korea
        {"documents": None},
        {"documents": {"a": 1}},
        [1],
    ],
    ids=[
        "document-string",
        "address-string",
        "road-address-list",
        "b-code-number",
        "lat-nan",
        "lat-infinity",
        "lng-missing",
        "outside-korea",
        "documents-null",
        "documents-object",
        "top-level-list",
    ],
)
async def test_odd_answers_from_kakao_are_a_502_and_not_cached(
    keyed: AsyncClient, auth: Headers, answer: Any
) -> None:
    query = f"어딘가 {uuid.uuid4().hex[:6]}"
    with kakao_mock() as kakao:
        route = kakao.get(KAKAO).mock(return_value=httpx.Response(200, json=answer))
        first = await keyed.get(GEOCODE, params={"query": query}, headers=auth())
        second = await keyed.get(GEOCODE, params={"query": query}, headers=auth())
    for response in (first, second):
        assert response.status_code == 502, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert "unexpected format" in response.json()["detail"]
    assert route.call_count == 2


@pytest.mark.parametrize("query", ["a", "   ", " a  ", "\t\t"], ids=repr)
async def test_a_too_short_query_is_a_422_before_kakao(
    keyed: AsyncClient, auth: Headers, query: str
) -> None:
    with kakao_mock() as kakao:
        route = kakao.get(KAKAO).mock(return_value=httpx.Response(200, json=KAKAO_ANSWER))
        response = await keyed.get(GEOCODE, params={"query": query}, headers=auth())
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert route.call_count == 0


@pytest.mark.parametrize(
    "authorization", [None, "Bearer not-a-token", "Basic dXNlcjpwYXNz"], ids=str
)
async def test_anonymous_callers_cannot_spend_the_kakao_quota(
    keyed: AsyncClient, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    with kakao_mock() as kakao:
        route = kakao.get(KAKAO).mock(return_value=httpx.Response(200, json=KAKAO_ANSWER))
        response = await keyed.get(
            GEOCODE, params={"query": f"서울 {uuid.uuid4().hex[:6]}"}, headers=headers
        )
    assert response.status_code == 401, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert route.call_count == 0


async def test_new_queries_are_limited_per_user_and_cached_ones_are_not(
    keyed: AsyncClient, keyed_app: FastAPI, auth: Headers, frozen_minute: float
) -> None:
    user, someone_else = auth(), auth()
    queries = [f"서울 중구 세종대로 {uuid.uuid4().hex[:6]}" for _ in range(LIMIT + 1)]
    with kakao_mock() as kakao:
        route = kakao.get(KAKAO).mock(return_value=httpx.Response(200, json=KAKAO_ANSWER))
        for query in queries[:LIMIT]:
            assert (await keyed.get(GEOCODE, params={"query": query}, headers=user)).is_success
        limited = await keyed.get(GEOCODE, params={"query": queries[LIMIT]}, headers=user)
        cached = await keyed.get(GEOCODE, params={"query": queries[0]}, headers=user)
        other = await keyed.get(GEOCODE, params={"query": queries[LIMIT]}, headers=someone_else)
    assert limited.status_code == 429, limited.text
    assert limited.headers["content-type"] == "application/problem+json"
    assert limited.headers["retry-after"] == str(max(1, 60 - int(frozen_minute % 60)))
    assert "Too many geocoding requests" in limited.json()["detail"]
    assert await keyed_app.state.redis.keys("locations:ratelimit:geocoding:*")
    assert cached.status_code == 200
    assert other.status_code == 200
    assert route.call_count == LIMIT + 1  # the refused query reached Kakao once, for the other


async def test_the_openapi_document_says_geocoding_needs_a_token(client: AsyncClient) -> None:
    document = (await client.get("/api/v1/locations/openapi.json")).json()
    operation = document["paths"][GEOCODE]["get"]
    assert operation["security"]
    assert {"401", "429"} <= set(operation["responses"])
    assert "Retry-After" in operation["responses"]["429"]["headers"]
