"""Routes served by plain Starlette handlers, for the paths where FastAPI's per-request
machinery costs most: the status poll (CPU) and the event stream (memory held per open
stream). Each path is still declared to FastAPI, which documents it from a signature; the app
matches the plain route first (``main.py``), and FastAPI's route serves it where that is not
installed."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute

Handler = Callable[[Request], Coroutine[Any, Any, Response]]


def served_by(handler: Handler) -> type[APIRoute]:
    """An APIRoute documented from its endpoint's signature like any route, served by
    `handler`."""

    class PlainHandlerRoute(APIRoute):
        def get_route_handler(self) -> Handler:
            return handler

    return PlainHandlerRoute


def path_uuid(request: Request, name: str) -> uuid.UUID:
    """A UUID path parameter, refused as FastAPI would refuse it (422, ValidationProblem)."""
    raw = request.path_params[name]
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise RequestValidationError(
            [
                {
                    "type": "uuid_parsing",
                    "loc": ("path", name),
                    "msg": "Input should be a valid UUID",
                    "input": raw,
                }
            ]
        ) from None
