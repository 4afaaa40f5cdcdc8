"""HTTP API of the waste service, mounted under /api/v1/waste."""

from fastapi import APIRouter
from starlette.routing import Route

from ecosort_waste.api.routes import analyses, events, uploads

api_router = APIRouter()
api_router.include_router(analyses.router)
api_router.include_router(events.router)
api_router.include_router(uploads.router)


def plain_routes(prefix: str) -> list[Route]:
    """The status poll and the event stream as plain Starlette routes, for the app to match
    before FastAPI's router (api/plain_routes.py): finding a route through FastAPI's nested
    included routers cost a fifth of a poll's CPU, and its dependency resolution held ~5 kB
    of every open stream (bench/README.md)."""
    analysis = f"{prefix}/analyses/{{analysis_id}}"
    return [
        Route(analysis, analyses.poll_analysis, methods=["GET"]),
        Route(f"{analysis}/events", events.stream_events, methods=["GET"]),
    ]
