"""The auth service keeps the promises every service makes (health, readiness, metrics,
OpenAPI, problem+json)."""

import pytest
from httpx import AsyncClient

from ecosort_common.testing import check_service_defaults, check_unreadable_body


async def test_service_defaults(client: AsyncClient) -> None:
    await check_service_defaults(client, "auth")


@pytest.mark.parametrize(
    ("path", "documented_as"),
    [
        ("/api/v1/auth/dev/login", None),
        ("/api/v1/auth/refresh", None),
        ("/api/v1/auth/logout", None),
        ("/api/v1/auth/kakao/token", "/api/v1/auth/{provider}/token"),
    ],
)
async def test_a_body_that_cannot_be_read_is_a_documented_400(
    client: AsyncClient, path: str, documented_as: str | None
) -> None:
    await check_unreadable_body(client, "POST", path, documented_as=documented_as)
