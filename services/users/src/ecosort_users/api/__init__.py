"""HTTP API of the users service, mounted under /api/v1/users."""

from fastapi import APIRouter

from ecosort_users.api.routes import me

api_router = APIRouter()
api_router.include_router(me.router)
