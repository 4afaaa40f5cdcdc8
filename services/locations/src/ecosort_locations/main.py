"""ASGI entry point: `uvicorn ecosort_locations.main:app`."""

from collections.abc import Awaitable

from fastapi import FastAPI

from ecosort_common.app import create_service_app
from ecosort_locations import models
from ecosort_locations.api import api_router
from ecosort_locations.config import Settings, get_settings
from ecosort_locations.kakao import KakaoLocalClient


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    async def open_geocoder(app: FastAPI) -> Awaitable[None] | None:
        key = settings.kakao_rest_api_key
        app.state.geocoder = (
            KakaoLocalClient(
                key.get_secret_value(),
                base_url=settings.kakao_local_base_url,
                timeout=settings.kakao_timeout_seconds,
            )
            if key is not None
            else None
        )
        return None

    async def close_geocoder(app: FastAPI) -> None:
        if app.state.geocoder is not None:
            await app.state.geocoder.aclose()

    return create_service_app(
        settings,
        title="EcoSort locations",
        description="Special collection points: nearest search, public-data import, geocoding.",
        routers=[api_router],
        outbox=models.outbox,
        on_startup=[open_geocoder],
        on_shutdown=[close_geocoder],
    )


app = create_app()
