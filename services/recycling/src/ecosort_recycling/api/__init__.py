"""HTTP API of the recycling service, mounted under /api/v1/recycling."""

from fastapi import APIRouter

from ecosort_recycling.api.routes import categories, feedback, items

api_router = APIRouter()
api_router.include_router(categories.router)
api_router.include_router(items.router)
api_router.include_router(feedback.router)
