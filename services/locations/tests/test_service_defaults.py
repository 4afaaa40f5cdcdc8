"""The locations service keeps the promises every service makes (health, readiness, metrics,
OpenAPI, problem+json)."""

from httpx import AsyncClient

from ecosort_common.testing import check_service_defaults


async def test_service_defaults(client: AsyncClient) -> None:
    await check_service_defaults(client, "locations")
