"""The recycling service keeps the promises every service makes (health, readiness, metrics,
OpenAPI, problem+json)."""

from collections.abc import Callable

from httpx import AsyncClient

from ecosort_common.testing import check_service_defaults, check_unreadable_body


async def test_service_defaults(client: AsyncClient) -> None:
    await check_service_defaults(client, "recycling")


async def test_a_body_that_cannot_be_read_is_a_documented_400(
    client: AsyncClient, auth: Callable[..., dict[str, str]]
) -> None:
    await check_unreadable_body(client, "POST", "/api/v1/recycling/feedback", headers=auth())
