"""Categories and their rules. Public: the app shows them before sign-in, and the waste
pipeline asks for one on every analysis (answered from memory)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response

from ecosort_common.errors import Problem
from ecosort_recycling.catalog import Catalog, get_catalog
from ecosort_recycling.schemas import CategoryOut, CategoryPage

router = APIRouter(prefix="/categories", tags=["categories"])
CatalogDep = Annotated[Catalog, Depends(get_catalog)]
# Rules change only with a new data version; let clients and the gateway reuse answers briefly.
CACHE_CONTROL = "public, max-age=300"


@router.get("", response_model=CategoryPage, summary="All categories with their rules")
async def list_categories(catalog: CatalogDep, response: Response) -> CategoryPage:
    response.headers["Cache-Control"] = CACHE_CONTROL
    return CategoryPage(
        items=list(catalog.category_bodies.values()), data_version=catalog.data_version
    )


@router.get("/{code}", response_model=CategoryOut, summary="One category's rules")
async def get_category(code: str, catalog: CatalogDep, response: Response) -> CategoryOut:
    body = catalog.category_bodies.get(code)
    if body is None:
        raise Problem(
            404,
            f"There is no category {code!r}; GET /api/v1/recycling/categories lists them.",
            title="Unknown category",
        )
    response.headers["Cache-Control"] = CACHE_CONTROL
    return body
