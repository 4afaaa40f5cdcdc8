"""ASGI entry point: `uvicorn ecosort_users.main:app`."""

from ecosort_common.app import create_service_app
from fastapi import FastAPI

from ecosort_users import models
from ecosort_users.api import api_router
from ecosort_users.config import Settings, get_settings


def create_app(settings: Settings | None = None) -> FastAPI:
    return create_service_app(
        settings or get_settings(),
        title="EcoSort users",
        routers=[api_router],
        outbox=models.outbox,
    )


app = create_app()
