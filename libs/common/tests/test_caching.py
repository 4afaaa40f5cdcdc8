"""One person's answers are not kept by HTTP caches; a route that serves public data says so
itself, and is believed."""

from __future__ import annotations

from httpx import AsyncClient

from ecosort_common.testing import TokenIssuer

API = "/api/v1/demo"


async def test_a_persons_answer_is_not_stored(
    client: AsyncClient, token_issuer: TokenIssuer
) -> None:
    mine = await client.get(
        f"{API}/me", headers={"Authorization": f"Bearer {token_issuer.token()}"}
    )
    assert mine.status_code == 200
    assert mine.headers["cache-control"] == "no-store"
    refused = await client.get(f"{API}/me")
    assert refused.status_code == 401
    assert refused.headers["cache-control"] == "no-store"


async def test_a_route_that_says_it_is_public_keeps_its_cache_control(
    client: AsyncClient,
) -> None:
    public = await client.get(f"{API}/public")
    assert public.headers.get_list("cache-control") == ["public, max-age=60"]
