"""ASGI entry point: `uvicorn ecosort_recycling.main:app`."""

from collections.abc import Awaitable

from fastapi import FastAPI

from ecosort_common.app import create_service_app
from ecosort_recycling import models
from ecosort_recycling.api import api_router
from ecosort_recycling.catalog import start_catalog
from ecosort_recycling.config import Settings, get_settings


async def _start_llm(app: FastAPI) -> Awaitable[None] | None:
    settings: Settings = app.state.settings
    app.state.llm = None
    if settings.llm_enabled:
        from ecosort_recycling.llm import GroundedModel  # heavy import, only when configured

        app.state.llm = GroundedModel(settings)
    return None


async def _stop_llm(app: FastAPI) -> None:
    if app.state.llm is not None:
        await app.state.llm.aclose()


def create_app(settings: Settings | None = None) -> FastAPI:
    return create_service_app(
        settings or get_settings(),
        title="EcoSort recycling",
        description="Korean disposal rules, forgiving item search and grounded feedback.",
        routers=[api_router],
        outbox=models.outbox,
        on_startup=[start_catalog, _start_llm],
        on_shutdown=[_stop_llm],
    )


app = create_app()
