"""The importer over the shipped public files and small files built to show each quirk."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from fastapi import FastAPI
from pydantic import SecretStr
from sqlalchemy import func, select

from ecosort_locations.commands import import_files, seed_files
from ecosort_locations.config import Settings
from ecosort_locations.importer.load import ImportReport, point_id
from ecosort_locations.importer.readers import UnknownLayout, read_points
from ecosort_locations.kakao import KakaoLocalClient
from ecosort_locations.models import CollectionPoint

Importer = Callable[..., Awaitable[ImportReport]]
KAKAO = "https://dapi.kakao.com/v2/local/search/address.json"


def standard_json(rows: list[dict[str, Any]]) -> bytes:
    return json.dumps(rows, ensure_ascii=False).encode()


def row(name: str, lat: float, lng: float, region: str = "가상시") -> dict[str, Any]:
    return {
        "p": "경기도",
        "g": region,
        "n": name,
        "a": f"경기도 {region} {name}",
        "y": lat,
        "x": lng,
    }


async def count(app: FastAPI, point_type: str) -> int:
    async with app.state.sessionmaker() as session:
        stmt = select(func.count()).where(CollectionPoint.type == point_type)
        return int(await session.scalar(stmt) or 0)


async def test_quirky_rows_are_dropped_counted_and_reimport_is_idempotent(
    app: FastAPI, import_data: Importer
) -> None:
    good = [row(f"정상로 {i}", 37.30 + i * 0.001, 127.00) for i in range(5)]
    rows = [
        *good,
        good[0],  # a repeated row
        row("엉뚱로 1", 34.68113, 126.897776),  # placed in the wrong city
        *[row(f"같은좌표로 {i}", 37.35, 127.05) for i in range(5)],  # a placeholder
        row("바다로 1", 0.0, 0.0),  # outside Korea
    ]
    report = await import_data("battery_test.json", standard_json(rows), "battery")
    assert report.layout == "standard-json"
    assert dict(report.counts) == {
        "rows_read": 13,
        "duplicate_rows": 1,
        "far_from_region": 1,
        "placeholder_coordinates": 5,
        "out_of_korea": 1,
        "skipped_no_coordinates": 7,
        "imported": 5,
    }
    again = await import_data("battery_test.json", standard_json(rows), "battery")
    assert again.counts["imported"] == 5
    assert await count(app, "battery") == 5


def test_a_cp949_csv_reads_like_its_utf8_original(shared_data: Path) -> None:
    original = (shared_data / "seoul_mapo_clothing_bins_EXCERPT_rows1-60.csv").read_bytes()
    as_cp949 = original.decode("utf-8-sig").encode("cp949")
    layout, utf8_rows = read_points("mapo.csv", original, "clothing")
    assert (layout, read_points("mapo.csv", as_cp949, "clothing")[1]) == (layout, utf8_rows)
    first = utf8_rows[0]
    assert layout == "district-csv"
    assert first.region == "서울특별시 마포구"
    assert first.source_date == date(2022, 12, 16)  # Excel serial 44911
    assert first.source_id == "clothing|서울특별시 마포구|1"
    assert first.lat == pytest.approx(37.5576854771307)


def test_unknown_layouts_are_refused() -> None:
    with pytest.raises(UnknownLayout):
        read_points("x.csv", "이름,전화\n가,010\n".encode(), "clothing")
    with pytest.raises(UnknownLayout):
        read_points("x.json", b'{"a": 1}', "clothing")
    with pytest.raises(UnknownLayout):
        read_points("x.csv", b"\xff\xfe\xfa\x00\x81", "clothing")


def _kakao_answer(request: httpx.Request) -> httpx.Response:
    """Kakao Local's documented answer: coordinates as strings, x = longitude."""
    query = request.url.params["query"]
    if "다산로24길 91" in query:
        return httpx.Response(200, json={"meta": {"total_count": 0}, "documents": []})
    offset = (sum(query.encode()) % 500) / 100_000
    return httpx.Response(
        200,
        json={
            "meta": {"total_count": 1, "pageable_count": 1, "is_end": True},
            "documents": [
                {
                    "address_name": query,
                    "address_type": "ROAD_ADDR",
                    "x": str(126.99 + offset),
                    "y": str(37.56 + offset),
                    "address": None,
                    "road_address": {"address_name": query, "region_1depth_name": "서울"},
                }
            ],
        },
    )


async def test_rows_without_coordinates_are_geocoded_through_kakao(
    app: FastAPI, import_data: Importer, shared_data: Path
) -> None:
    data = (shared_data / "seoul_junggu_clothing_bins_20241126.csv").read_bytes()
    geocoder = KakaoLocalClient("test-key", base_url="https://dapi.kakao.com", timeout=2)
    try:
        with respx.mock(assert_all_called=True) as kakao:
            route = kakao.get(KAKAO).mock(side_effect=_kakao_answer)
            report = await import_data("junggu.csv", data, "lamp", geocoder=geocoder)
    finally:
        await geocoder.aclose()
    assert report.layout == "standard-csv"
    assert report.counts["geocoded"] == 183
    assert report.counts["skipped_geocode_failed"] == 1
    assert report.counts["imported"] == 183
    assert route.calls[0].request.headers["authorization"] == "KakaoAK test-key"
    async with app.state.sessionmaker() as session:
        point = await session.get(
            CollectionPoint, point_id("standard-csv", "lamp|서울특별시|중구|1")
        )
    assert point is not None and point.geocoded
    assert (point.name, point.detail, point.source_date) == (
        "회현동",
        "건물 앞 도로변",
        date(2024, 11, 26),
    )


async def test_without_a_kakao_key_rows_without_coordinates_are_skipped(
    import_data: Importer, shared_data: Path
) -> None:
    data = (shared_data / "seoul_junggu_clothing_bins_20241126.csv").read_bytes()
    report = await import_data("junggu.csv", data, "small_appliance")
    assert (report.counts["imported"], report.counts["skipped_no_coordinates"]) == (0, 184)


async def test_a_bin_another_dataset_already_lists_is_not_added_twice(
    app: FastAPI, import_data: Importer, shared_data: Path
) -> None:
    mapo = (shared_data / "seoul_mapo_clothing_bins_EXCERPT_rows1-60.csv").read_bytes()
    assert (await import_data("mapo.csv", mapo, "cooking_oil")).counts["imported"] == 60
    _, mapo_rows = read_points("mapo.csv", mapo, "cooking_oil")
    near = mapo_rows[0]
    assert near.lat is not None and near.lng is not None
    other = [
        {
            "p": "서울특별시",
            "g": "마포구",
            "n": "3m 옆",
            "a": near.address,
            "y": near.lat + 0.00003,
            "x": near.lng,
        },
        {
            "p": "서울특별시",
            "g": "마포구",
            "n": "먼 곳",
            "a": "다른 주소",
            "y": near.lat + 0.01,
            "x": near.lng,
        },
    ]
    report = await import_data("other.json", standard_json(other), "cooking_oil")
    assert (report.counts["same_as_other_source"], report.counts["imported"]) == (1, 1)
    assert (await import_data("mapo.csv", mapo, "cooking_oil")).counts["imported"] == 60
    assert await count(app, "cooking_oil") == 61


async def test_the_shipped_nationwide_file_imports_with_its_quirks_handled(
    import_data: Importer, shared_data: Path
) -> None:
    data = (shared_data / "clothing-bins-nationwide.json").read_bytes()
    report = await import_data("clothing-bins-nationwide.json", data, "clothing")
    counts = report.counts
    assert counts["rows_read"] == 12_947
    assert counts["duplicate_rows"] == 410
    # PROVENANCE.md: 안양시's 136 rows at one point and 중랑구's 29 are placeholders; the one
    # 대구 중구 row in another city is caught.
    assert counts["placeholder_coordinates"] >= 136 + 29
    assert counts["far_from_region"] == 1
    assert counts["imported"] + counts["same_as_other_source"] == 12_947 - 410 - 266


async def test_seeding_imports_each_file_once(
    settings: Settings, tmp_path: Path, shared_data: Path
) -> None:
    mapo = shared_data / "seoul_mapo_clothing_bins_EXCERPT_rows1-60.csv"
    (tmp_path / "mapo_medicine_bins.csv").write_bytes(mapo.read_bytes())
    (tmp_path / "notes.csv").write_text("no type in this name\n")
    files = seed_files(tmp_path)
    assert [(name, point_type) for name, _, point_type in files] == [
        ("mapo_medicine_bins.csv", "medicine")
    ]
    first = await import_files(settings, files, skip_known=True)
    second = await import_files(settings, files, skip_known=True)
    assert first[0]["counts"]["imported"] == 60  # type: ignore[index]
    assert second == [{"file": "mapo_medicine_bins.csv", "skipped": "already imported"}]


async def test_seeding_retries_rows_left_out_once_a_geocoder_is_configured(
    settings: Settings, tmp_path: Path, shared_data: Path
) -> None:
    junggu = shared_data / "seoul_junggu_clothing_bins_20241126.csv"
    (tmp_path / "junggu_battery.csv").write_bytes(junggu.read_bytes())
    files = seed_files(tmp_path)
    without_key = await import_files(settings, files, skip_known=True)
    assert without_key[0]["counts"]["skipped_no_coordinates"] == 184  # type: ignore[index]
    assert (await import_files(settings, files, skip_known=True))[0]["skipped"]
    keyed = settings.model_copy(update={"kakao_rest_api_key": SecretStr("test-key")})
    with respx.mock() as kakao:
        kakao.get(KAKAO).mock(side_effect=_kakao_answer)
        with_key = await import_files(keyed, files, skip_known=True)
        again = await import_files(keyed, files, skip_known=True)
    assert with_key[0]["counts"]["imported"] == 183  # type: ignore[index]
    assert again[0] == {"file": "junggu_battery.csv", "skipped": "already imported"}
