"""HTTP API of the locations service, mounted under /api/v1/locations."""

from fastapi import APIRouter

from ecosort_locations.api.routes import collection_points, geocode

api_router = APIRouter()
api_router.include_router(collection_points.router)
api_router.include_router(geocode.router)
