"""The users service keeps the promises every service makes (health, readiness, metrics,
OpenAPI, problem+json)."""

import uuid
from collections.abc import Callable

from httpx import AsyncClient

from ecosort_common.testing import check_service_defaults, check_unreadable_body

Auth = Callable[[uuid.UUID], dict[str, str]]


async def test_service_defaults(client: AsyncClient) -> None:
    await check_service_defaults(client, "users")


async def test_a_body_that_cannot_be_read_is_a_documented_400(
    client: AsyncClient, auth: Auth
) -> None:
    await check_unreadable_body(client, "PATCH", "/api/v1/users/me", headers=auth(uuid.uuid4()))
