"""Item search: forgiving of spacing, typos, 초성 and synonyms. Public."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from pydantic import PositiveInt, TypeAdapter

from ecosort_common.errors import Problem
from ecosort_common.pagination import decode_cursor_of, encode_cursor_of
from ecosort_recycling.catalog import Catalog, get_catalog
from ecosort_recycling.schemas import ItemSearchOut
from ecosort_recycling.search import SearchIndex

router = APIRouter(prefix="/items", tags=["items"])
CatalogDep = Annotated[Catalog, Depends(get_catalog)]

# The ranking is computed in memory and is the same for the same query and the same knowledge
# base, so a cursor is a position in it, bound to the query and to the loaded data version: after
# a reload (new items, new synonyms) the same position is another item.
_POSITION = TypeAdapter(tuple[PositiveInt, str])


@router.get(
    "",
    response_model=ItemSearchOut,
    summary="Search items, best match first",
    description="Cursor-paginated: while `next_cursor` is set, pass it back as `cursor` with the "
    "same `q` for the next `limit` items of the same ranking. A malformed cursor, one from "
    "another query, or one from before a reload of the knowledge base is a 400 problem.",
)
async def search_items(
    catalog: CatalogDep,
    q: Annotated[str, Query(min_length=1, max_length=100, description="What to look for")],
    limit: Annotated[int, Query(ge=1, le=50)] = 10,
    cursor: Annotated[
        str | None,
        Query(max_length=200, description="`next_cursor` of the previous page of this query"),
    ] = None,
) -> ItemSearchOut:
    if not SearchIndex.clean_query(q):
        raise Problem(
            422,
            "The query has no letters or digits to search for.",
            title="Request validation failed",
        )
    start = 0
    if cursor:
        start, version = decode_cursor_of(cursor, _POSITION, query=[q])
        if version != catalog.data_version:
            raise Problem(
                400,
                "The rules knowledge base was updated since this cursor was handed out: "
                "search again without a cursor.",
                title="Invalid cursor",
            )
    # One hit more than the page shows, to know whether another page exists.
    hits = catalog.index.search(q, limit=start + limit + 1)[start:]
    next_cursor = (
        encode_cursor_of([start + limit, catalog.data_version], query=[q])
        if len(hits) > limit
        else None
    )
    return ItemSearchOut(
        query=q,
        items=[catalog.item_out(hit) for hit in hits[:limit]],
        next_cursor=next_cursor,
        data_version=catalog.data_version,
    )
