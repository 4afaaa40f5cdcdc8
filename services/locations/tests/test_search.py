"""Nearest-point search, one point, and the types, over points imported into the real database."""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from httpx import AsyncClient

from ecosort_locations.geo import METRES_PER_DEGREE_LAT, haversine_m
from ecosort_locations.importer.load import ImportReport, import_file

Importer = Callable[..., Awaitable[ImportReport]]
POINTS = "/api/v1/locations/collection-points"
# 안동시: no shipped dataset has points within 20 km, so these tests own the neighbourhood.
CENTRE = (36.5684, 128.7294)
# name → (metres north, metres east) of the centre
LAYOUT = {
    "north-100": (100, 0),
    "east-250": (0, 250),
    "southwest-600": (-424, -424),
    "north-1500": (1500, 0),
    "east-1990": (0, 1990),  # near the radius along a parallel: the box must not clip it
    "far-5000": (5000, 0),
}


def offset(north_m: float, east_m: float) -> tuple[float, float]:
    lat = CENTRE[0] + north_m / METRES_PER_DEGREE_LAT
    lng = CENTRE[1] + east_m / (METRES_PER_DEGREE_LAT * math.cos(math.radians(CENTRE[0])))
    return lat, lng


def as_rows(names: dict[str, tuple[float, float]]) -> bytes:
    rows: list[dict[str, Any]] = []
    for name, (north, east) in names.items():
        lat, lng = offset(north, east)
        rows.append(
            {"p": "경상북도", "g": "안동시", "n": name, "a": f"안동시 {name}", "y": lat, "x": lng}
        )
    return json.dumps(rows, ensure_ascii=False).encode()


@pytest.fixture(scope="module")
async def andong(import_data_module: Importer) -> None:
    await import_data_module("andong_medicine.json", as_rows(LAYOUT), "medicine")
    await import_data_module("andong_lamp.json", as_rows({"lamp-50": (50, 0)}), "lamp")


@pytest.fixture(scope="module")
def import_data_module(app: Any) -> Importer:
    async def run(file_name: str, data: bytes, point_type: str) -> ImportReport:
        async with app.state.sessionmaker() as session, session.begin():
            return await import_file(session, file_name, data, point_type)

    return run


def params(**extra: Any) -> dict[str, Any]:
    return {"lat": CENTRE[0], "lng": CENTRE[1], **extra}


@pytest.mark.usefixtures("andong")
async def test_nearest_first_with_true_distances_within_the_radius(client: AsyncClient) -> None:
    response = await client.get(POINTS, params=params(radius_m=2000, type="medicine"))
    assert response.status_code == 200, response.text
    body = response.json()
    names = [item["name"] for item in body["items"]]
    assert names == ["north-100", "east-250", "southwest-600", "north-1500", "east-1990"]
    for item in body["items"]:
        expected = haversine_m(CENTRE[0], CENTRE[1], item["lat"], item["lng"])
        assert item["distance_m"] == pytest.approx(expected, abs=0.1)
    assert body["items"][0]["distance_m"] == pytest.approx(100, abs=0.5)
    assert body["center"] == {"lat": CENTRE[0], "lng": CENTRE[1]} and body["radius_m"] == 2000


@pytest.mark.usefixtures("andong")
async def test_type_radius_and_limit_narrow_the_answer(client: AsyncClient) -> None:
    everything = (await client.get(POINTS, params=params(radius_m=2000))).json()["items"]
    assert [i["name"] for i in everything[:2]] == ["lamp-50", "north-100"]
    lamps = (await client.get(POINTS, params=params(type="lamp"))).json()["items"]
    assert [(i["name"], i["type"]) for i in lamps] == [("lamp-50", "lamp")]
    small = (await client.get(POINTS, params=params(radius_m=300, limit=1))).json()["items"]
    assert [i["name"] for i in small] == ["lamp-50"]
    wide = (await client.get(POINTS, params=params(radius_m=6000, type="medicine"))).json()
    assert wide["items"][-1]["name"] == "far-5000"


async def test_nowhere_near_anything_is_an_empty_list(client: AsyncClient) -> None:
    response = await client.get(POINTS, params={"lat": 35.0, "lng": 125.0, "radius_m": 500})
    assert response.status_code == 200 and response.json()["items"] == []


@pytest.mark.parametrize(
    "bad",
    [
        {"lat": 91},
        {"lng": 181},
        {"lat": "north"},
        {"radius_m": 0},
        {"radius_m": 20_001},
        {"type": "sofa"},
        {"limit": 0},
        {"limit": 101},
    ],
)
async def test_out_of_range_queries_are_422_problems(
    client: AsyncClient, bad: dict[str, Any]
) -> None:
    response = await client.get(POINTS, params=params(**bad))
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["errors"]


async def test_lat_and_lng_are_required(client: AsyncClient) -> None:
    response = await client.get(POINTS, params={"lat": 37.5})
    assert response.status_code == 422


@pytest.mark.usefixtures("andong")
async def test_one_point_by_id(client: AsyncClient) -> None:
    nearest = (await client.get(POINTS, params=params(type="medicine", limit=1))).json()["items"][0]
    response = await client.get(f"{POINTS}/{nearest['id']}")
    assert response.status_code == 200
    point = response.json()
    assert point["name"] == "north-100" and point["region"] == "경상북도 안동시"
    assert "distance_m" not in point

    missing = await client.get(f"{POINTS}/00000000-0000-0000-0000-000000000000")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    assert (await client.get(f"{POINTS}/not-a-uuid")).status_code == 422


@pytest.mark.usefixtures("andong")
async def test_types_list_every_kind_with_its_categories_and_count(client: AsyncClient) -> None:
    types = {t["code"]: t for t in (await client.get("/api/v1/locations/types")).json()["items"]}
    assert {"clothing", "battery", "lamp", "medicine"} <= set(types)
    assert types["clothing"]["categories"] == ["textile"]
    assert types["clothing"]["name_ko"] == "의류수거함"
    assert types["medicine"]["count"] >= len(LAYOUT)


# Pagination has neighbourhoods of its own, 8 km from the centre and from each other, so other
# tests' points never fall inside their 1 km.
PAGED = {
    "near-100": (-8000 + 100, 0),
    # Three bins at one spot: equal distances, so a page boundary between them needs the id.
    "tie-a": (-8000 + 200, 0),
    "tie-b": (-8000 + 200, 0),
    "tie-c": (-8000 + 200, 0),
    "east-400": (-8000, 400),
}
PAGED_CENTRE = offset(-8000, 0)


def paged_params(**extra: Any) -> dict[str, Any]:
    return {"lat": PAGED_CENTRE[0], "lng": PAGED_CENTRE[1], "type": "battery", **extra}


@pytest.fixture(scope="module")
async def paged(import_data_module: Importer) -> None:
    await import_data_module("paged_battery.json", as_rows(PAGED), "battery")


@pytest.mark.usefixtures("paged")
async def test_next_cursor_walks_the_whole_list_across_equal_distances(
    client: AsyncClient,
) -> None:
    whole = (await client.get(POINTS, params=paged_params(limit=100))).json()
    assert len(whole["items"]) == len(PAGED) and whole["next_cursor"] is None
    pages: list[list[str]] = []
    cursor: str | None = None
    for _ in range(len(PAGED)):
        extra = {"cursor": cursor} if cursor else {}
        response = await client.get(POINTS, params=paged_params(limit=2, **extra))
        assert response.status_code == 200, response.text
        body = response.json()
        pages.append([item["id"] for item in body["items"]])
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert [len(page) for page in pages] == [2, 2, 1]
    assert [point for page in pages for point in page] == [item["id"] for item in whole["items"]]


async def test_a_point_added_between_pages_neither_repeats_nor_hides_one(
    client: AsyncClient, import_data: Importer
) -> None:
    centre = offset(0, 8000)
    layout: dict[str, tuple[float, float]] = {f"bin-{m}": (m, 8000) for m in (100, 200, 300)}
    await import_data("between_oil.json", as_rows(layout), "cooking_oil")
    query = {"lat": centre[0], "lng": centre[1], "type": "cooking_oil", "limit": 2}
    first = (await client.get(POINTS, params=query)).json()
    assert [item["name"] for item in first["items"]] == ["bin-100", "bin-200"]

    # Nearer than everything shown: an offset would now repeat bin-200. (The file's next
    # version: it replaces the first, so it lists the earlier bins too.)
    layout["late-10"] = (10, 8000)
    await import_data("between_oil.json", as_rows(layout), "cooking_oil")
    second = (await client.get(POINTS, params=query | {"cursor": first["next_cursor"]})).json()
    assert [item["name"] for item in second["items"]] == ["bin-300"]
    assert second["next_cursor"] is None


@pytest.mark.usefixtures("paged")
async def test_a_cursor_from_another_search_or_malformed_is_a_400_problem(
    client: AsyncClient,
) -> None:
    cursor = (await client.get(POINTS, params=paged_params(limit=1))).json()["next_cursor"]
    assert cursor
    for other in (
        paged_params(lat=PAGED_CENTRE[0] + 0.001, cursor=cursor),
        paged_params(lng=PAGED_CENTRE[1] + 0.001, cursor=cursor),
        paged_params(radius_m=999, cursor=cursor),
        paged_params(type="lamp", cursor=cursor),
        {"lat": PAGED_CENTRE[0], "lng": PAGED_CENTRE[1], "cursor": cursor},
        paged_params(cursor="garbage"),
        paged_params(cursor="WzAsIDFd"),  # [0, 1]: well-formed, never handed out
    ):
        response = await client.get(POINTS, params=other)
        assert response.status_code == 400, other
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["title"] == "Invalid cursor"


@pytest.mark.usefixtures("paged")
async def test_a_cursor_of_the_default_radius_pages_on_with_that_radius_given(
    client: AsyncClient,
) -> None:
    whole = (await client.get(POINTS, params=paged_params(limit=100))).json()["items"]
    first = (await client.get(POINTS, params=paged_params(limit=2))).json()
    assert first["radius_m"] == 1000
    # The radius the answer names, or the default written out, is the same search.
    for radius in (first["radius_m"], 1000, "1000.0"):
        extra = {"radius_m": radius, "cursor": first["next_cursor"]}
        response = await client.get(POINTS, params=paged_params(limit=2, **extra))
        assert response.status_code == 200, response.text
        assert [item["id"] for item in response.json()["items"]] == [
            item["id"] for item in whole[2:4]
        ]
