"""ASGI entry point: `uvicorn ecosort_users.main:app`."""

from fastapi import FastAPI

from ecosort_common.app import create_service_app
from ecosort_users import models
from ecosort_users.api import api_router
from ecosort_users.config import Settings, get_settings
from ecosort_users.handlers import event_handlers


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    return create_service_app(
        settings,
        title="EcoSort users",
        description="Profiles, analysis history and statistics (built from events).",
        routers=[api_router],
        outbox=models.outbox,
        consumers=event_handlers(settings),
        processed_events=models.processed_events,
    )


app = create_app()
