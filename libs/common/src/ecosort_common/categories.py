"""The category codes: the contract between vision, recycling, waste and the app (DESIGN.md §3).
One definition, so a code added here reaches every service's validation and OpenAPI enum."""

from typing import Literal, get_args

CategoryCode = Literal[
    "paper",
    "paper_pack",
    "glass_bottle",
    "can",
    "scrap_metal",
    "pet_clear",
    "plastic",
    "vinyl",
    "styrofoam",
    "textile",
    "battery",
    "lamp",
    "small_appliance",
    "large_appliance",
    "medicine",
    "food",
    "general",
    "nonburnable",
    "bulky",
    "cooking_oil",
    "hazardous",
]
CATEGORY_CODES: tuple[str, ...] = get_args(CategoryCode)
