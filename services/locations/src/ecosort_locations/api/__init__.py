"""HTTP API of the locations service, mounted under /api/v1/locations."""

from fastapi import APIRouter

api_router = APIRouter()
