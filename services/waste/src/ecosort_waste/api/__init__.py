"""HTTP API of the waste service, mounted under /api/v1/waste."""

from fastapi import APIRouter

from ecosort_waste.api.routes import analyses, events, uploads

api_router = APIRouter()
api_router.include_router(analyses.router)
api_router.include_router(events.router)
api_router.include_router(uploads.router)
