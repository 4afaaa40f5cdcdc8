"""The waste service keeps the promises every service makes (health, readiness, metrics,
OpenAPI, problem+json)."""

import os
import subprocess
import sys
import uuid

import pytest
from httpx import AsyncClient

from ecosort_common.testing import TokenIssuer, check_service_defaults, check_unreadable_body
from ecosort_waste.config import Settings


async def test_service_defaults(client: AsyncClient) -> None:
    await check_service_defaults(client, "waste")


@pytest.mark.parametrize(
    ("path", "documented_as"),
    [
        ("/api/v1/waste/uploads", None),
        # A fixed id: pytest-xdist's workers must collect the same test ids.
        (
            "/api/v1/waste/analyses/7d9b6e10-312d-41e3-89ef-a3f983a622f9/feedback",
            "/api/v1/waste/analyses/{analysis_id}/feedback",
        ),
    ],
)
async def test_a_body_that_cannot_be_read_is_a_documented_400(
    client: AsyncClient, token_issuer: TokenIssuer, path: str, documented_as: str | None
) -> None:
    headers = {"Authorization": f"Bearer {token_issuer.token(uuid.uuid4())}"}
    await check_unreadable_body(client, "POST", path, documented_as=documented_as, headers=headers)


def test_the_api_process_does_not_load_the_pipeline_or_the_model_runtime(
    settings: Settings,
) -> None:
    """The API only sends messages (queue.py); the pipeline and onnxruntime are the worker's.
    A fresh process starts the app and enqueues, then looks at what it imported."""
    code = """
import asyncio, sys, uuid
from asgi_lifespan import LifespanManager
from ecosort_waste.main import create_app

async def main():
    app = create_app()
    async with LifespanManager(app):
        app.state.enqueue_analysis(uuid.uuid4())

asyncio.run(main())
loaded = {"onnxruntime", "ecosort_waste.pipeline", "ecosort_waste.worker"} & set(sys.modules)
assert not loaded, loaded
"""
    env = {
        **os.environ,
        **{
            name.upper(): str(value)
            for name, value in settings.model_dump().items()
            if isinstance(value, str | int | float | bool)
        },
        "CELERY_KEY_PREFIX": f"test-api-imports-{uuid.uuid4().hex}:",
    }
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60, env=env)
