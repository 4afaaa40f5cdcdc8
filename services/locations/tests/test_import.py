"""The importer over the shipped public files and small files built to show each quirk."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Awaitable, Callable
from datetime import date
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import respx
from fastapi import FastAPI
from pydantic import SecretStr
from sqlalchemy import func, select

from ecosort_locations.commands import import_files, seed_files
from ecosort_locations.config import Settings
from ecosort_locations.geo import METRES_PER_DEGREE_LAT
from ecosort_locations.importer.cleaning import address_key
from ecosort_locations.importer.load import LNG_SCALE, ImportReport, _Grid, point_id
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
    assert report.counts["skipped_address_not_found"] == 1
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
    app: FastAPI, import_data: Importer, shared_data: Path
) -> None:
    data = (shared_data / "clothing-bins-nationwide.json").read_bytes()
    report = await import_data("clothing-bins-nationwide.json", data, "clothing")
    counts = report.counts
    assert counts["rows_read"] == 12_947
    # 410 rows repeat another's words, but 12 of them are further bins (the alley below); 37
    # more repeat a row in another spacing, at its very coordinates (정자로 20번길27).
    assert (counts["duplicate_rows"], counts["same_words_other_place"]) == (398 + 37, 12)
    # PROVENANCE.md: 안양시's 136 rows at one point and 중랑구's 29 are placeholders; the one
    # 대구 중구 row in another city is caught.
    assert counts["placeholder_coordinates"] >= 136 + 29
    assert counts["far_from_region"] == 1
    assert counts["imported"] + counts["same_as_other_source"] == 12_947 - 435 - 266
    async with app.state.sessionmaker() as session:
        alley = select(func.count()).where(
            CollectionPoint.type == "clothing",
            CollectionPoint.address == "서울특별시 노원구 동일로239다길",
        )
        # 14 rows, five of them "주택가 골목" up to ~600 m apart: 14 bins.
        assert await session.scalar(alley) == 14

    # The Mapo file lists 53 of its 60 bins where the nationwide file does, and two more at
    # the same addresses, geocoded ~60 m away (마포대로20길 6-11, 마포대로16나길 25).
    mapo = (shared_data / "seoul_mapo_clothing_bins_EXCERPT_rows1-60.csv").read_bytes()
    mapo_report = await import_data("mapo.csv", mapo, "clothing")
    assert (mapo_report.counts["same_as_other_source"], mapo_report.counts["imported"]) == (55, 5)


async def test_seeding_imports_each_file_once(
    settings: Settings, tmp_path: Path, shared_data: Path
) -> None:
    mapo = shared_data / "seoul_mapo_clothing_bins_EXCERPT_rows1-60.csv"
    (tmp_path / "mapo_medicine_bins.csv").write_bytes(mapo.read_bytes())
    (tmp_path / "notes.csv").write_text("no type in this name\n")
    files, failures = seed_files(tmp_path)
    assert [(name, point_type) for name, _, point_type in files] == [
        ("mapo_medicine_bins.csv", "medicine")
    ]
    assert failures == []
    first = await import_files(settings, files, skip_known=True)
    second = await import_files(settings, files, skip_known=True)
    assert first[0]["counts"]["imported"] == 60  # type: ignore[index]
    assert second == [{"file": "mapo_medicine_bins.csv", "skipped": "already imported"}]


async def test_two_seedings_at_once_import_a_file_once(
    settings: Settings, shared_data: Path
) -> None:
    """Two `migrate` runs together (two hook Jobs, the launcher and a hand): one imports, the
    other finds the file imported, and Kakao's quota is spent once."""
    mapo = shared_data / "seoul_mapo_clothing_bins_EXCERPT_rows1-60.csv"
    files = [("mapo_battery_bins.csv", mapo.read_bytes(), "battery")]
    reports = await asyncio.gather(
        import_files(settings, files, skip_known=True),
        import_files(settings, files, skip_known=True),
    )
    assert sorted("skipped" in report[0] for report in reports) == [False, True]


async def test_seeding_retries_rows_left_out_once_a_geocoder_is_configured(
    settings: Settings, tmp_path: Path, shared_data: Path
) -> None:
    junggu = shared_data / "seoul_junggu_clothing_bins_20241126.csv"
    (tmp_path / "junggu_battery.csv").write_bytes(junggu.read_bytes())
    files, _ = seed_files(tmp_path)
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


def metres_east(lat: float, lng: float, metres: float) -> float:
    return lng + metres / (METRES_PER_DEGREE_LAT * math.cos(math.radians(lat)))


async def test_bins_listed_in_the_same_words_elsewhere_are_kept_as_other_bins(
    app: FastAPI, import_data: Importer
) -> None:
    lat, lng = 37.21, 127.61
    alley = [
        row("골목", lat, lng, "반복시"),
        row("골목", lat, metres_east(lat, lng, 5), "반복시"),  # the same bin, listed twice
        row("골목", lat, metres_east(lat, lng, 300), "반복시"),  # another bin
        row("골목", lat, metres_east(lat, lng, 303), "반복시"),  # that one again
        row("골목", lat, metres_east(lat, lng, 600), "반복시"),  # a third
    ]
    first = await import_data("alley.json", standard_json(alley), "medicine")
    assert (first.counts["duplicate_rows"], first.counts["imported"]) == (2, 3)
    again = await import_data("alley.json", standard_json(alley), "medicine")
    assert again.counts["imported"] == 3 and "retired" not in again.counts
    async with app.state.sessionmaker() as session:
        stored = (
            await session.scalars(
                select(CollectionPoint.lng).where(CollectionPoint.region == "경기도 반복시")
            )
        ).all()
    assert sorted(stored) == [alley[0]["x"], alley[2]["x"], alley[4]["x"]]


async def test_coordinates_given_in_the_other_order_are_put_right(
    app: FastAPI, import_data: Importer
) -> None:
    lat, lng = 36.71, 127.21
    rows = [
        row("바른순서로 1", lat, lng, "순서시"),
        {**row("뒤바뀐순서로 1", 0, 0, "순서시"), "y": lng + 0.001, "x": lat},  # x, y mixed up
        *[row(f"이웃로 {i}", lat + i * 0.001, lng, "순서시") for i in range(1, 4)],
    ]
    report = await import_data("order.json", standard_json(rows), "medicine")
    assert (report.counts["swapped_coordinates"], report.counts["imported"]) == (1, 5)
    assert "out_of_korea" not in report.counts
    async with app.state.sessionmaker() as session:
        stored = (
            await session.execute(
                select(CollectionPoint.lat, CollectionPoint.lng).where(
                    CollectionPoint.name == "뒤바뀐순서로 1"
                )
            )
        ).one()
    assert tuple(stored) == (lat, lng + 0.001)


async def test_a_repeat_with_its_coordinates_in_the_other_order_is_the_same_bin(
    app: FastAPI, import_data: Importer
) -> None:
    lat, lng = 36.61, 127.31
    listed = row("거꾸로 3", lat, lng, "거꾸로시")
    repeated = {**listed, "y": lng, "x": lat}  # the same bin again, x and y mixed up
    neighbours = [row(f"옆길 {i}", lat + i * 0.001, lng, "거꾸로시") for i in range(1, 4)]
    report = await import_data(
        "twice.json", standard_json([listed, repeated, *neighbours]), "medicine"
    )
    assert report.counts["duplicate_rows"] == 1 and report.counts["imported"] == 4
    async with app.state.sessionmaker() as session:
        stored = await session.scalars(
            select(CollectionPoint.source_id).where(CollectionPoint.name == "거꾸로 3")
        )
        assert len(stored.all()) == 1


async def test_a_repeated_row_gives_its_coordinates_to_a_first_listing_without_them(
    app: FastAPI, import_data: Importer
) -> None:
    header = "관리번호,설치장소명,시도명,시군구명,소재지도로명주소,위도,경도"
    data = (
        f"{header}\n7,곳,충청북도,반복군,반복로 7,,\n7,곳,충청북도,반복군,반복로 7,36.91,127.71\n"
    ).encode()
    report = await import_data("repeat.csv", data, "medicine")
    assert report.counts == {"rows_read": 2, "duplicate_rows": 1, "imported": 1}
    async with app.state.sessionmaker() as session:
        point = await session.get(
            CollectionPoint, point_id("standard-csv", "medicine|충청북도|반복군|7")
        )
    assert point is not None and (point.lat, point.lng) == (36.91, 127.71)


async def test_a_row_repeated_in_another_spacing_is_one_bin(
    app: FastAPI, import_data: Importer
) -> None:
    lat, lng = 36.81, 127.11
    # The shipped nationwide file lists 37 bins twice so (천안시 "서부3길 15" and "서부3길15").
    spaced = row("정자로 20번길27", lat, lng, "띄어쓰기시")
    unspaced = row("정자로20번길27", lat, lng, "띄어쓰기시")
    elsewhere = row("정자로20번길 27", lat, metres_east(lat, lng, 300), "띄어쓰기시")
    report = await import_data(
        "spacing.json", standard_json([spaced, unspaced, elsewhere]), "medicine"
    )
    assert (report.counts["duplicate_rows"], report.counts["imported"]) == (1, 2)
    again = await import_data(
        "spacing.json", standard_json([spaced, unspaced, elsewhere]), "medicine"
    )
    assert again.counts["imported"] == 2 and "retired" not in again.counts
    async with app.state.sessionmaker() as session:
        stored = await session.scalars(
            select(CollectionPoint.name).where(CollectionPoint.region == "경기도 띄어쓰기시")
        )
        assert sorted(stored.all()) == sorted([spaced["n"], elsewhere["n"]])


def located_row(name: str, address: str, lat: float, lng: float | None) -> dict[str, Any]:
    return {"p": "전북특별자치도", "g": "교정시", "n": name, "a": address, "y": lat, "x": lng}


async def test_a_new_version_of_a_file_replaces_the_earlier_one(
    app: FastAPI, import_data: Importer
) -> None:
    lat, lng = 35.81, 127.11
    typo = located_row("답십리25", "전북특별자치도 교정시 답십리로59길 57 (동대무동)", lat, lng)
    kept = located_row("정상 1", "전북특별자치도 교정시 정상로 1", lat + 0.01, lng)
    gone = located_row("철거 1", "전북특별자치도 교정시 철거로 1", lat + 0.02, lng)
    moved_out = located_row("좌표 잃음", "전북특별자치도 교정시 좌표로 1", lat + 0.03, lng)
    neighbour = {**kept, "g": "이웃시", "a": "전북특별자치도 이웃시 정상로 1", "y": lat - 0.05}
    await import_data("neighbour_lamp.json", standard_json([neighbour]), "lamp")
    first = await import_data("lamp_v1.json", standard_json([typo, kept, gone, moved_out]), "lamp")
    assert first.counts["imported"] == 4
    _, (typo_point,) = read_points("v1.json", standard_json([typo]), "lamp")
    old_id = point_id("standard-json", typo_point.source_id)

    fixed = {**typo, "a": "전북특별자치도 교정시 답십리로59길 57 (동대문동)"}
    # Upstream corrected an address, removed a bin, and lost one's coordinates (still listed).
    second = await import_data(
        "lamp_v2.json", standard_json([fixed, kept, {**moved_out, "y": None}]), "lamp"
    )
    assert (second.counts["corrected"], second.counts["retired"]) == (1, 1)
    assert second.counts["imported"] == 2
    async with app.state.sessionmaker() as session:
        rows = (
            await session.execute(
                select(CollectionPoint.id, CollectionPoint.name, CollectionPoint.address).where(
                    CollectionPoint.type == "lamp", CollectionPoint.source == "standard-json"
                )
            )
        ).all()
    # The corrected bin is its old self (same id); a listed bin left without coordinates keeps
    # its stored ones; the neighbouring district's bin is not this file's to retire.
    assert sorted((name, address) for _, name, address in rows) == sorted(
        [
            ("답십리25", fixed["a"]),
            ("정상 1", kept["a"]),
            ("좌표 잃음", moved_out["a"]),
            ("정상 1", neighbour["a"]),
        ]
    )
    assert {row_id: name for row_id, name, _ in rows}[old_id] == "답십리25"


def district_csv(rows: list[tuple[str, float, float]]) -> bytes:
    lines = ["연번,도로명주소,위도,경도,데이터기준일자"]
    lines += [f"{i},{address},{lat},{lng},44911" for i, (address, lat, lng) in enumerate(rows, 1)]
    return "\n".join(lines).encode()


async def test_a_bin_another_dataset_lists_at_the_same_address_is_not_added_twice(
    import_data: Importer,
) -> None:
    lat, lng = 37.45, 127.15
    nationwide = {
        "p": "서울특별시",
        "g": "시험구",
        "n": "시험대로20길 6-11",
        "a": "서울특별시 시험구 시험대로20길 6-11",
        "y": lat,
        "x": lng,
    }
    await import_data("nationwide.json", standard_json([nationwide]), "small_appliance")
    district = district_csv(
        [
            # The same bin, geocoded ~60 m away by the district, which adds its 동.
            ("서울특별시 시험구 시험동 시험대로20길 6-11", lat, metres_east(lat, lng, 60)),
            # The same words 400 m away: another bin on a long street, not this one.
            ("서울특별시 시험구 시험동 시험대로20길 6-11", lat, metres_east(lat, lng, 400)),
        ]
    )
    report = await import_data("district.csv", district, "small_appliance")
    assert (report.counts["same_as_other_source"], report.counts["imported"]) == (1, 1)


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("서울특별시 마포구 공덕동 마포대로20길 6-11", "마포대로20길6-11"),
        ("서울특별시 마포구 마포대로20길 6-11 (공덕동)", "마포대로20길6-11"),
        ("서울 종로구 종로 1", "종로1"),
        ("경기도 안양시 만안구 충훈로로71번길16", "충훈로로71번길16"),
        ("서울특별시 중구 남창동 186", "서울특별시중구남창동186"),
    ],
)
def test_address_keys_match_the_ways_datasets_write_one_address(address: str, key: str) -> None:
    assert address_key(address) == key


def _kakao_far_south(request: httpx.Request) -> httpx.Response:
    offset = (sum(request.url.params["query"].encode()) % 500) / 10_000
    document = {"address_name": "어딘가", "y": str(34.9 + offset), "x": str(127.9 + offset)}
    return httpx.Response(200, json={"documents": [document]})


async def test_seeding_retries_rows_kakao_failed_on(settings: Settings, tmp_path: Path) -> None:
    header = "관리번호,설치장소명,시도명,시군구명,소재지도로명주소,위도,경도"
    lines = [header] + [f"{i},곳 {i},경상남도,재시도군,재시도로 {i},," for i in range(3)]
    (tmp_path / "retry_battery.csv").write_text("\n".join(lines))
    files, _ = seed_files(tmp_path)
    keyed = settings.model_copy(update={"kakao_rest_api_key": SecretStr("test-key")})
    with respx.mock() as kakao:
        quota = {"errorType": "RequestThrottled", "message": "API limit has been exceeded."}
        kakao.get(KAKAO).mock(return_value=httpx.Response(429, json=quota))
        out_of_quota = await import_files(keyed, files, skip_known=True)
    assert out_of_quota[0]["counts"] == {
        "rows_read": 3,
        "skipped_geocode_failed": 3,
        "imported": 0,
    }
    with respx.mock() as kakao:
        kakao.get(KAKAO).mock(side_effect=_kakao_far_south)
        next_start = await import_files(keyed, files, skip_known=True)
        again = await import_files(keyed, files, skip_known=True)
    assert next_start[0]["counts"]["imported"] == 3  # type: ignore[index]
    assert again[0] == {"file": "retry_battery.csv", "skipped": "already imported"}


@pytest.mark.parametrize(
    "documents",
    [
        ["x"],
        [{"address_name": "a", "y": "37.5", "x": "127", "address": "a string"}],
        [{"address_name": "a", "y": "37.5", "x": "127", "road_address": ["a list"]}],
        [{"address_name": "a", "y": "NaN", "x": "127"}],
    ],
    ids=["string", "address-string", "road-list", "nan"],
)
async def test_odd_kakao_answers_skip_the_row_not_the_import(
    import_data: Importer, documents: list[Any]
) -> None:
    header = "관리번호,설치장소명,시도명,시군구명,소재지도로명주소,위도,경도"
    data = f"{header}\n1,곳,경상남도,이상군,이상로 1,,\n2,곳,경상남도,이상군,,,\n".encode()
    geocoder = KakaoLocalClient("test-key", base_url="https://dapi.kakao.com", timeout=2)
    try:
        with respx.mock() as kakao:
            kakao.get(KAKAO).mock(return_value=httpx.Response(200, json={"documents": documents}))
            report = await import_data("odd.csv", data, "battery", geocoder=geocoder)
    finally:
        await geocoder.aclose()
    assert report.counts == {
        "rows_read": 2,
        "skipped_geocode_failed": 1,
        "skipped_no_address": 1,
        "imported": 0,
    }


@pytest.mark.parametrize("lat", [36.0, 37.5, 37.9, 38.3, 38.7])
def test_a_neighbour_across_a_cell_edge_is_found_at_every_korean_latitude(lat: float) -> None:
    cell = _Grid[SimpleNamespace]([]).cell
    misses = 0
    for k in range(200):
        # A point at the east edge of a cell, and one 14.95 m due east of it in the next.
        west = ((745_000 + k) + 1) * cell / LNG_SCALE - 1e-9
        east = SimpleNamespace(lat=lat, lng=metres_east(lat, west, 14.95))
        misses += not _Grid([east]).has_neighbour(lat, west)
    assert misses == 0


async def _ids_by_lng(app: FastAPI, region: str) -> dict[float, Any]:
    async with app.state.sessionmaker() as session:
        stored = await session.execute(
            select(CollectionPoint.lng, CollectionPoint.id).where(
                CollectionPoint.region == f"경기도 {region}"
            )
        )
    return {lng: row_id for lng, row_id in stored.all()}


async def test_a_district_file_leaves_a_same_named_bin_across_the_border_alone(
    app: FastAPI, import_data: Importer
) -> None:
    lat, lng = 37.41, 127.41
    gap = row("주민센터 앞", lat, lng, "경계갑시")
    eul = row("주민센터 앞", lat, metres_east(lat, lng, 8), "경계을시")
    await import_data("gap.json", standard_json([gap]), "lamp")
    gap_ids = await _ids_by_lng(app, "경계갑시")
    report = await import_data("eul.json", standard_json([eul]), "lamp")
    # 8 m apart and of one name, but in another 시·군·구: not a correction of 갑시's row.
    assert "corrected" not in report.counts and "retired" not in report.counts
    assert await _ids_by_lng(app, "경계갑시") == gap_ids == {gap["x"]: gap_ids[gap["x"]]}
    assert list(await _ids_by_lng(app, "경계을시")) == [eul["x"]]


async def test_a_bin_removed_upstream_does_not_pass_its_id_to_one_in_the_same_words(
    app: FastAPI, import_data: Importer
) -> None:
    lat, lng = 37.31, 127.31
    alley = [row("골목", lat, metres_east(lat, lng, d), "순번시") for d in (0, 300, 600, 900)]
    await import_data("v1.json", standard_json(alley[:3]), "lamp")
    before = await _ids_by_lng(app, "순번시")
    # The first bin is removed upstream; the other two are listed again, one moved 5 m.
    moved = {**alley[2], "x": metres_east(lat, lng, 605)}
    second = await import_data("v2.json", standard_json([alley[1], moved]), "lamp")
    assert (second.counts["retired"], second.counts["imported"]) == (1, 2)
    after = await _ids_by_lng(app, "순번시")
    assert after == {alley[1]["x"]: before[alley[1]["x"]], moved["x"]: before[alley[2]["x"]]}
    # A bin added later is a new bin: neither a kept nor the removed bin's id.
    third = await import_data("v3.json", standard_json([alley[1], moved, alley[3]]), "lamp")
    assert "retired" not in third.counts
    latest = await _ids_by_lng(app, "순번시")
    assert {k: v for k, v in latest.items() if k != alley[3]["x"]} == after
    assert latest[alley[3]["x"]] not in set(before.values())
