"""The region a person lives in (시·군·구), given as a 5-digit administrative code or a name.

Korean sorting rules differ per 시·군·구, so the region is stored in one canonical form. Codes are
the 행정표준코드 시·군·구 codes (first two digits: the 시·도). The table below knows every 시·도
and Seoul's 25 구; elsewhere a well-formed 시·군·구 name under a known 시·도 is accepted as given
(its code stays empty) rather than refused.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

# 시·도: code prefix → official name, and the short forms people type.
PROVINCES: dict[str, str] = {
    "11": "서울특별시",
    "26": "부산광역시",
    "27": "대구광역시",
    "28": "인천광역시",
    "29": "광주광역시",
    "30": "대전광역시",
    "31": "울산광역시",
    "36": "세종특별자치시",
    "41": "경기도",
    "43": "충청북도",
    "44": "충청남도",
    "46": "전라남도",
    "47": "경상북도",
    "48": "경상남도",
    "50": "제주특별자치도",
    "51": "강원특별자치도",
    "52": "전북특별자치도",
}
PROVINCE_ALIASES: dict[str, str] = {
    "서울": "11", "서울시": "11", "부산": "26", "부산시": "26", "대구": "27", "대구시": "27",
    "인천": "28", "인천시": "28", "광주": "29", "광주시": "29", "대전": "30", "대전시": "30",
    "울산": "31", "울산시": "31", "세종": "36", "세종시": "36", "경기": "41", "충북": "43",
    "충남": "44", "전남": "46", "경북": "47", "경남": "48", "제주": "50", "제주도": "50",
    "강원": "51", "강원도": "51", "전북": "52", "전라북도": "52",
}  # fmt: skip
SEJONG_CODE = "36110"  # 세종 has no 시·군·구 below it: the city is its own district
SEOUL_DISTRICTS: dict[str, str] = {
    "11110": "종로구", "11140": "중구", "11170": "용산구", "11200": "성동구",
    "11215": "광진구", "11230": "동대문구", "11260": "중랑구", "11290": "성북구",
    "11305": "강북구", "11320": "도봉구", "11350": "노원구", "11380": "은평구",
    "11410": "서대문구", "11440": "마포구", "11470": "양천구", "11500": "강서구",
    "11530": "구로구", "11545": "금천구", "11560": "영등포구", "11590": "동작구",
    "11620": "관악구", "11650": "서초구", "11680": "강남구", "11710": "송파구",
    "11740": "강동구",
}  # fmt: skip
FULLY_TABLED_PROVINCES = {"11", "36"}
# Names several 시·도 share: without the 시·도 they name no one place.
SHARED_DISTRICT_NAMES = {"중구", "동구", "서구", "남구", "북구", "강서구", "고성군"}
DISTRICT_NAME = re.compile(r"^[가-힣]{1,10}[시군구]$")


@dataclass(frozen=True)
class Region:
    code: str | None
    name: str


class InvalidRegion(ValueError):
    """The text is neither a known code nor a well-formed 시·군·구 name."""


def _province_code(word: str) -> str | None:
    for code, name in PROVINCES.items():
        if word == name:
            return code
    return PROVINCE_ALIASES.get(word)


def _known_districts() -> dict[str, Region]:
    regions = {code: Region(code, f"서울특별시 {name}") for code, name in SEOUL_DISTRICTS.items()}
    regions[SEJONG_CODE] = Region(SEJONG_CODE, PROVINCES["36"])
    return regions


KNOWN_DISTRICTS = _known_districts()


def _from_code(code: str) -> Region:
    if code in KNOWN_DISTRICTS:
        return KNOWN_DISTRICTS[code]
    province = code[:2]
    if province not in PROVINCES or province in FULLY_TABLED_PROVINCES or code.endswith("000"):
        raise InvalidRegion(f"{code} is not a 시·군·구 code.")
    return Region(code, PROVINCES[province])


def _from_name(words: list[str]) -> Region:
    province = _province_code(words[0])
    districts = words[1:] if province else words
    if province == "36" and not districts:
        return KNOWN_DISTRICTS[SEJONG_CODE]
    if not districts or len(districts) > 2 or not all(DISTRICT_NAME.match(w) for w in districts):
        raise InvalidRegion("Give a 시·군·구, e.g. '서울특별시 마포구' or '11440'.")
    district = " ".join(districts)
    matches = [
        region
        for region in KNOWN_DISTRICTS.values()
        if region.name.split(" ", 1)[-1] == district
        and (province is None or (region.code is not None and region.code[:2] == province))
    ]
    if province is None and district in SHARED_DISTRICT_NAMES:
        raise InvalidRegion(f"There is more than one '{district}': add the 시·도.")
    if len(matches) == 1:
        return matches[0]
    if province is None:
        raise InvalidRegion(f"'{district}' is ambiguous or unknown: add the 시·도.")
    if province in FULLY_TABLED_PROVINCES:
        raise InvalidRegion(f"{PROVINCES[province]} has no '{district}'.")
    return Region(None, f"{PROVINCES[province]} {district}")


def parse_region(text: str) -> Region:
    """Canonical region for a code ('11440') or a name ('서울 마포구', '마포구')."""
    # NFKC: a name typed or pasted as decomposed jamo (NFD, as macOS and some keyboards give it)
    # is the same name, and full-width digits from a Korean keyboard are the same code.
    cleaned = " ".join(unicodedata.normalize("NFKC", text).split())
    if not cleaned:
        raise InvalidRegion("The region is empty.")
    if cleaned.isdigit():
        # isdigit() also holds for other scripts' digits ('41١١٠'): not a code, nor storable as one.
        if len(cleaned) != 5 or not cleaned.isascii():
            raise InvalidRegion("A 시·군·구 code has 5 digits (0-9).")
        return _from_code(cleaned)
    return _from_name(cleaned.split(" "))
