"""HTTP API of the users service, mounted under /api/v1/users."""

from fastapi import APIRouter

api_router = APIRouter()
