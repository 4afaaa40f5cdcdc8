"""Reading public collection-point files into rows of one shape, whatever their layout.

Layouts recognised (see /work/shared/data/collection-points/PROVENANCE.md):
- `standard-json`: a JSON array of {p: 시도, g: 시군구, n: place, a: address, y: lat, x: lng}
  (a reshaped national standard dataset);
- `standard-csv`: the national standard CSV layout (설치장소명, 시도명, 시군구명,
  소재지도로명주소, 소재지지번주소, 위도, 경도, …, 데이터기준일자), or the same records as
  data.go.kr's standard JSON download ({"records": [...]});
- `district-csv`: a district's own layout (연번, 도로명주소, 위도, 경도, 데이터기준일자 as an
  Excel serial date).
Korean public CSVs come as UTF-8 (with or without BOM) or CP949/EUC-KR: both are detected.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

# CP949 is Microsoft's superset of EUC-KR: it decodes both.
ENCODINGS = ("utf-8-sig", "cp949")
EXCEL_EPOCH = date(1899, 12, 30)  # Excel's day 0, off by the 1900 leap-year bug it keeps
STANDARD_COLUMNS = {"시도명", "시군구명", "위도", "경도"}
DISTRICT_COLUMNS = {"도로명주소", "위도", "경도"}


@dataclass
class RawPoint:
    source: str
    source_id: str
    name: str
    address: str
    detail: str | None
    region: str | None
    lat: float | None
    lng: float | None
    source_date: date | None
    # The identity the file's words give the row, kept when cleaning.drop_repeated_rows numbers
    # another bin listed in the same words (source_id then ends in #n).
    words: str = ""
    # That identity with the words' spaces ignored: files list one bin twice in two spacings
    # ("정자로 20번길27", "정자로20번길27"), which cleaning.drop_repeated_rows takes as a repeat.
    spelling: str = ""

    def __post_init__(self) -> None:
        self.words = self.words or self.source_id
        self.spelling = self.spelling or self.words


class UnknownLayout(ValueError):
    """The file is not in a layout this importer knows."""


def decode(data: bytes) -> str:
    for encoding in ENCODINGS:
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise UnknownLayout(f"The file is neither UTF-8 nor CP949/EUC-KR text ({ENCODINGS}).")


def _text(value: Any) -> str:
    return " ".join(str(value).split()) if value is not None else ""


def _coordinate(value: Any) -> float | None:
    try:
        number = float(str(value).strip())
    except ValueError:
        return None
    return number if number == number else None  # NaN is not a coordinate


def _date(value: Any) -> date | None:
    text = _text(value)
    if not text:
        return None
    try:
        return date.fromisoformat(text.replace(".", "-").replace("/", "-"))
    except ValueError:
        pass
    try:
        serial = float(text)
    except ValueError:
        return None
    return EXCEL_EPOCH + timedelta(days=int(serial)) if 20_000 < serial < 80_000 else None


def _digest(*parts: str) -> str:
    return hashlib.sha1("|".join(parts).encode()).hexdigest()[:16]


def _unspaced_digest(*parts: str) -> str:
    return _digest(*("".join(part.split()) for part in parts))


def _region(*parts: str) -> str | None:
    return " ".join(p for p in parts if p) or None


def _from_standard_json(rows: Iterable[dict[str, Any]], point_type: str) -> Iterator[RawPoint]:
    for row in rows:
        province, district = _text(row.get("p")), _text(row.get("g"))
        name, address = _text(row.get("n")), _text(row.get("a"))
        yield RawPoint(
            source="standard-json",
            # No row id upstream: the row's own words identify it (coordinates may be corrected);
            # cleaning.drop_repeated_rows numbers other bins listed in the same words.
            source_id=f"{point_type}|{province}|{district}|{_digest(name, address)}",
            spelling=f"{point_type}|{province}|{district}|{_unspaced_digest(name, address)}",
            name=name or address,
            address=address,
            detail=None,
            region=_region(province, district),
            lat=_coordinate(row.get("y")),
            lng=_coordinate(row.get("x")),
            source_date=None,
        )


def _from_standard_records(rows: Iterable[dict[str, Any]], point_type: str) -> Iterator[RawPoint]:
    for row in rows:
        province, district = _text(row.get("시도명")), _text(row.get("시군구명"))
        address = _text(row.get("소재지도로명주소")) or _text(row.get("소재지지번주소"))
        name = _text(row.get("설치장소명")) or address
        number = _text(row.get("관리번호"))
        detail = _text(row.get("상세위치")) or _text(row.get("세부위치")) or None
        yield RawPoint(
            source="standard-csv",
            source_id=f"{point_type}|{province}|{district}|{number or _digest(name, address)}",
            spelling=f"{point_type}|{province}|{district}|"
            f"{number or _unspaced_digest(name, address)}",
            name=name,
            address=address,
            detail=detail,
            region=_region(province, district),
            lat=_coordinate(row.get("위도")),
            lng=_coordinate(row.get("경도")),
            source_date=_date(row.get("데이터기준일자")),
        )


def _from_district_records(rows: Iterable[dict[str, Any]], point_type: str) -> Iterator[RawPoint]:
    for row in rows:
        address = _text(row.get("도로명주소"))
        words = address.split(" ")
        region = _region(*words[:2])
        number = _text(row.get("연번")).removesuffix(".0")
        yield RawPoint(
            source="district-csv",
            source_id=f"{point_type}|{region}|{number or _digest(address)}",
            spelling=f"{point_type}|{region}|{number or _unspaced_digest(address)}",
            name=address,
            address=address,
            detail=None,
            region=region,
            lat=_coordinate(row.get("위도")),
            lng=_coordinate(row.get("경도")),
            source_date=_date(row.get("데이터기준일자")),
        )


def _from_json(text: str, point_type: str) -> tuple[str, list[RawPoint]]:
    document = json.loads(text)
    if isinstance(document, dict) and isinstance(document.get("records"), list):
        return "standard-csv", list(_from_standard_records(document["records"], point_type))
    if isinstance(document, list) and all(isinstance(r, dict) for r in document):
        if document and not {"a", "y", "x"} <= set(document[0]):
            raise UnknownLayout(f"Unknown JSON row keys: {sorted(document[0])[:8]}.")
        return "standard-json", list(_from_standard_json(document, point_type))
    raise UnknownLayout('A JSON file must be an array of rows or {"records": [...]}.')


def _from_csv(text: str, point_type: str) -> tuple[str, list[RawPoint]]:
    reader = csv.DictReader(io.StringIO(text))
    header = {(name or "").strip() for name in reader.fieldnames or []}
    rows = [
        {(k or "").strip(): v for k, v in row.items()}
        for row in reader
        if any((v or "").strip() for v in row.values() if isinstance(v, str))
    ]
    if header >= STANDARD_COLUMNS:
        return "standard-csv", list(_from_standard_records(rows, point_type))
    if header >= DISTRICT_COLUMNS:
        return "district-csv", list(_from_district_records(rows, point_type))
    raise UnknownLayout(f"Unknown CSV header: {sorted(header)}.")


def read_points(file_name: str, data: bytes, point_type: str) -> tuple[str, list[RawPoint]]:
    """(layout, rows) of a public data file."""
    text = decode(data)
    if file_name.lower().endswith(".json") or text.lstrip()[:1] in ("[", "{"):
        try:
            return _from_json(text, point_type)
        except json.JSONDecodeError as exc:
            raise UnknownLayout(f"Not valid JSON: {exc}.") from exc
    return _from_csv(text, point_type)
