"""HTTP API of the auth service, mounted under /api/v1/auth."""

from fastapi import APIRouter

from ecosort_auth.api.routes import sessions, signin, tokens

api_router = APIRouter()
# tokens first: its fixed paths (/refresh, /jwks.json) must win over signin's /{provider}/….
api_router.include_router(tokens.router)
api_router.include_router(sessions.router)
api_router.include_router(signin.router)
