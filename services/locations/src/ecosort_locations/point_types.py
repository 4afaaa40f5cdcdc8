"""Kinds of special collection point, and the waste categories (DESIGN.md §3) each takes, so the
app can go from an analysis's category to the bins that accept it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PointType:
    code: str
    name_ko: str
    name_en: str
    categories: tuple[str, ...]


POINT_TYPES: dict[str, PointType] = {
    t.code: t
    for t in (
        PointType("clothing", "의류수거함", "Clothing bin", ("textile",)),
        PointType("battery", "폐건전지 수거함", "Battery bin", ("battery",)),
        PointType("lamp", "폐형광등 수거함", "Lamp bin", ("lamp",)),
        PointType("medicine", "폐의약품 수거함", "Medicine bin", ("medicine",)),
        PointType(
            "small_appliance", "소형 폐가전 수거함", "Small appliance bin", ("small_appliance",)
        ),
        PointType("cooking_oil", "폐식용유 수거함", "Cooking oil bin", ("cooking_oil",)),
    )
}

# Words in a public file's name that tell what it lists (Korean portals name files this way).
FILE_NAME_HINTS: dict[str, tuple[str, ...]] = {
    "clothing": ("clothing", "의류"),
    # Not the bare "전지": it is also in 전지역 ("every area") and 안전지도 ("safety map").
    "battery": ("battery", "건전지", "폐전지"),
    "lamp": ("lamp", "형광등"),
    "medicine": ("medicine", "의약품"),
    "small_appliance": ("appliance", "가전"),
    "cooking_oil": ("cooking_oil", "식용유"),
}


class AmbiguousFileName(ValueError):
    """The file's name names more than one kind of point."""


def type_from_file_name(name: str) -> str | None:
    """The kind a file's name says it lists, None if it names none. A name naming several
    (폐형광등_폐건전지.csv) is refused: taking one would file the other kind's bins under it."""
    lowered = name.lower()
    codes = [
        code for code, hints in FILE_NAME_HINTS.items() if any(hint in lowered for hint in hints)
    ]
    if len(codes) > 1:
        raise AmbiguousFileName(
            f"{name}: the name says more than one kind ({', '.join(codes)}); say which with --type"
        )
    return codes[0] if codes else None
