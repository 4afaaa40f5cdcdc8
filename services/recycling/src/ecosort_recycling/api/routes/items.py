"""Item search: forgiving of spacing, typos, 초성 and synonyms. Public."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from ecosort_common.errors import Problem
from ecosort_recycling.catalog import Catalog, get_catalog
from ecosort_recycling.schemas import ItemSearchOut
from ecosort_recycling.search import SearchIndex

router = APIRouter(prefix="/items", tags=["items"])
CatalogDep = Annotated[Catalog, Depends(get_catalog)]


@router.get("", response_model=ItemSearchOut, summary="Search items, best match first")
async def search_items(
    catalog: CatalogDep,
    q: Annotated[str, Query(min_length=1, max_length=100, description="What to look for")],
    limit: Annotated[int, Query(ge=1, le=50)] = 10,
) -> ItemSearchOut:
    if not SearchIndex.clean_query(q):
        raise Problem(
            422,
            "The query has no letters or digits to search for.",
            title="Request validation failed",
        )
    hits = catalog.index.search(q, limit=limit)
    return ItemSearchOut(
        query=q, items=[catalog.item_out(hit) for hit in hits], data_version=catalog.data_version
    )
