"""How the TrashNet material classes map onto the category codes (DESIGN.md §3)."""

from __future__ import annotations

from ecosort_common.categories import CATEGORY_CODES

__all__ = [
    "CATEGORY_CODES",
    "IMAGENET_NOTE",
    "MAPPING_NOTES",
    "TRASHNET_CLASSES",
    "TRASHNET_TO_CATEGORY",
]

# The head's output order; the head file stores it too and the loader checks they agree.
TRASHNET_CLASSES: tuple[str, ...] = ("cardboard", "glass", "metal", "paper", "plastic", "trash")

TRASHNET_TO_CATEGORY: dict[str, str] = {
    "cardboard": "paper",
    "glass": "glass_bottle",
    "metal": "can",
    "paper": "paper",
    "plastic": "plastic",
    "trash": "general",
}

# How far to trust the material → disposal-stream step, per category the head can answer.
MAPPING_NOTES: dict[str, str] = {
    "paper": "sure: TrashNet cardboard and paper both go to paper; a milk or juice carton "
    "would be paper_pack, which the photos do not separate.",
    "glass_bottle": "fairly sure: TrashNet glass is mostly bottles and jars; broken glass, "
    "drinking glasses and ceramics go to nonburnable instead.",
    "can": "fairly sure: TrashNet metal is mostly drink and food cans; other metal objects "
    "(pots, tools) are scrap_metal, and a spray can needs emptying first.",
    "plastic": "unsure between plastic and pet_clear: a clear, unlabelled PET drink bottle "
    "goes to pet_clear; film and bags go to vinyl.",
    "general": "unsure: TrashNet trash is a mix of wrappers and dirty items; check whether "
    "a cleaner part can be recycled.",
}
IMAGENET_NOTE = "from the ImageNet labels of the backbone (no TrashNet training for this item)"


def mapping_note(category: str | None) -> str:
    if category is None:
        return "not sure: see the candidates"
    return MAPPING_NOTES.get(category, IMAGENET_NOTE)
