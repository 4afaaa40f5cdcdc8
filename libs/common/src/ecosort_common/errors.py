"""RFC 9457 problem+json for every error path: ours, FastAPI's, Starlette's and the unexpected."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from http import HTTPStatus
from typing import Any

import redis.exceptions
import sqlalchemy.exc
import structlog
from fastapi import FastAPI, Request
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import SkipJsonSchema
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import Scope

PROBLEM_JSON = "application/problem+json"
ABOUT_BLANK = "about:blank"
# The methods a 405's Allow may name, in the order it names them.
STANDARD_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
PROBLEM_TYPE_PREFIX = "urn:ecosort:problem:"
log = structlog.get_logger("ecosort.errors")


def problem_type_and_title(status: int, title: str | None, type_: str | None) -> tuple[str, str]:
    """The `type` and `title` of a problem. Under "about:blank" the title is the status phrase
    (RFC 9457 §4.2.1), so a title of its own names a type of its own, derived from the title:
    `urn:ecosort:problem:analysis-not-found`. A title that only restates the phrase in other
    letter case ("Too many requests") stays under "about:blank"."""
    phrase = _phrase(status)
    if type_ is not None and type_ != ABOUT_BLANK:
        return type_, title or phrase
    if title is None or title.casefold() == phrase.casefold():
        return ABOUT_BLANK, title or phrase
    slug = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")
    if not slug:  # no letter a type could be named by: the plain status, then
        return ABOUT_BLANK, phrase
    return PROBLEM_TYPE_PREFIX + slug, title


class Problem(Exception):
    """Raise anywhere in a request to answer with a problem+json body."""

    def __init__(
        self,
        status: int,
        detail: str | None = None,
        *,
        title: str | None = None,
        type_: str | None = None,
        headers: dict[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(detail or title or str(status))
        self.status = status
        self.type, self.title = problem_type_and_title(status, title, type_)
        self.detail = detail
        self.headers = headers or {}
        self.extensions = extensions


def _left_out(schema: dict[str, Any]) -> None:
    """An optional member is absent, never null: no `default: null` in its schema."""
    schema.pop("default", None)


class ProblemBody(BaseModel):
    """What `problem_response` writes, for the OpenAPI document (ecosort_common.openapi)."""

    # Extensions ride along (`errors`, or a handler's own such as `hint`).
    model_config = ConfigDict(title="Problem", extra="allow")

    type: str = Field(
        description='A URI naming the kind of problem: "about:blank" when `title` is the HTTP '
        "status phrase, else a URN such as `urn:ecosort:problem:analysis-not-found`."
    )
    title: str
    status: int
    # Left out, rather than null, when there is nothing to add to the title.
    detail: str | SkipJsonSchema[None] = Field(default=None, json_schema_extra=_left_out)
    # Optional in the schema, as in RFC 9457: the services always send it, the gateway's own
    # problems (an unknown route, a body too large) cannot.
    instance: str | SkipJsonSchema[None] = Field(
        default=None, description="The path of the request.", json_schema_extra=_left_out
    )
    request_id: str | SkipJsonSchema[None] = Field(
        default=None,
        description="The X-Request-ID of the request, to quote in a bug report.",
        json_schema_extra=_left_out,
    )


class FieldError(BaseModel):
    """One refused input of a request validation problem (`_jsonable_error`)."""

    loc: list[str] = Field(description='Where, e.g. ["body", "category"] or ["query", "limit"].')
    msg: str
    type: str


class ValidationProblemBody(ProblemBody):
    """A 422: `errors` when the request did not match what the endpoint accepts."""

    model_config = ConfigDict(title="ValidationProblem")

    # Optional: a handler's own 422 (a reused Idempotency-Key, say) comes without it.
    errors: list[FieldError] | SkipJsonSchema[None] = Field(
        default=None, json_schema_extra=_left_out
    )


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def problem_response(
    request: Request,
    status: int,
    *,
    title: str | None = None,
    detail: str | None = None,
    type_: str | None = None,
    headers: Mapping[str, str] | None = None,
    **extensions: Any,
) -> JSONResponse:
    type_, title = problem_type_and_title(status, title, type_)
    body: dict[str, Any] = {"type": type_, "title": title, "status": status}
    if detail:
        body["detail"] = detail
    body["instance"] = request.url.path
    request_id = getattr(request.state, "request_id", None)
    if request_id:
        body["request_id"] = request_id
    body.update(extensions)
    return JSONResponse(
        body, status_code=status, headers=dict(headers or {}), media_type=PROBLEM_JSON
    )


async def _on_problem(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Problem)
    return problem_response(
        request,
        exc.status,
        title=exc.title,
        detail=exc.detail,
        type_=exc.type,
        headers=exc.headers,
        **exc.extensions,
    )


async def _on_http_exception(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else None
    if exc.status_code == 404 and detail == "Not Found":
        detail = f"No resource at {request.url.path}."
    headers = dict(exc.headers or {})
    if exc.status_code == 405 and "Allow" in headers:
        headers["Allow"] = _allow(request, headers["Allow"])
    return problem_response(request, exc.status_code, detail=detail, headers=headers)


def _allow(request: Request, named: str) -> str:
    """Every method of the resource (RFC 9110 §15.5.6). The router's 405 names only the methods
    of the first route on the path, though other routes on it may take other methods."""
    allow = [method for method in named.split(", ") if method]
    taken = _methods_routed(request)
    # Unless a route took the request's method: then the 405 and its Allow are its handler's.
    if request.method not in taken:
        allow = [m for m in STANDARD_METHODS if m in taken or m in allow] + sorted(
            set(allow) - set(STANDARD_METHODS)
        )
    if "GET" in allow and "HEAD" not in allow:
        # HEAD is answered wherever GET is (ecosort_common.head), though no route says so.
        allow.insert(allow.index("GET") + 1, "HEAD")
    return ", ".join(allow)


def _methods_routed(request: Request) -> set[str]:
    """The standard methods some route takes at the request's path. Asked of the routes with a
    fresh scope per method, as the router would: FastAPI's included routers keep their routes
    to themselves, and the request's scope carries what routing the 405 already wrote in it."""
    scope = request.scope
    taken: set[str] = set()
    for method in STANDARD_METHODS:
        probe: Scope = {
            "type": "http",
            "method": method,
            "path": scope["path"],
            "root_path": scope.get("root_path", ""),
            "headers": scope.get("headers", []),
            "query_string": b"",
        }
        if any(route.matches(probe)[0] is Match.FULL for route in request.app.router.routes):
            taken.add(method)
    return taken


def _jsonable_error(error: Any) -> dict[str, Any]:
    return {
        "loc": [str(part) for part in error.get("loc", ())],
        "msg": str(error.get("msg", "")),
        "type": str(error.get("type", "")),
    }


async def _on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    if any(error.get("type") == "json_invalid" for error in exc.errors()):
        # FastAPI decodes a JSON body before it runs any dependency, the token check included.
        # A client whose token expired would hear 422 for a body that was never the problem,
        # where 401 tells it to refresh; so on an authenticated route the token comes first.
        refused = await _token_refused(request)
        if refused is not None:
            return await _on_problem(request, refused)
    return problem_response(
        request,
        422,
        title="Request validation failed",
        detail="The request did not match what this endpoint accepts.",
        errors=[_jsonable_error(e) for e in exc.errors()],
    )


async def _token_refused(request: Request) -> Problem | None:
    # Imported here: security raises this module's Problem.
    from ecosort_common.security import current_principal

    route = request.scope.get("route")
    if not isinstance(route, APIRoute) or not _depends_on(route.dependant, current_principal):
        return None
    try:
        await current_principal(request)
    except Problem as problem:
        return problem
    return None


def _depends_on(dependant: Dependant, call: Callable[..., Any]) -> bool:
    return any(d.call is call or _depends_on(d, call) for d in dependant.dependencies)


# A store that is down or not answering (refused, reset, timed out, a replica after a
# failover): the request was fine and may succeed in a moment; its transaction, if any, was
# rolled back. Decided by SQLSTATE for the database, not by class: psycopg files a statement
# over a program limit or a full disk under OperationalError too, and retrying those is futile.
STORE_RETRY_AFTER_SECONDS = 5
_REDIS_UNAVAILABLE = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.ReadOnlyError,  # a replica since a failover
)
_UNAVAILABLE_SQLSTATES = frozenset(
    {
        "57P01",  # admin_shutdown
        "57P02",  # crash_shutdown
        "57P03",  # cannot_connect_now (starting up)
        "53300",  # too_many_connections
        "25006",  # read_only_sql_transaction (a standby after a failover)
    }
)


def store_unavailable(exc: Exception) -> bool:
    if isinstance(exc, (*_REDIS_UNAVAILABLE, sqlalchemy.exc.TimeoutError)):
        return True  # sqlalchemy's TimeoutError: no pooled connection came free in time
    if not isinstance(exc, sqlalchemy.exc.DBAPIError):
        return False
    if exc.connection_invalidated or isinstance(exc, sqlalchemy.exc.InterfaceError):
        return True
    sqlstate = getattr(exc.orig, "sqlstate", None)
    if sqlstate is None:  # no answer from the server at all: refused, reset, timed out
        return isinstance(exc, sqlalchemy.exc.OperationalError)
    return sqlstate.startswith("08") or sqlstate in _UNAVAILABLE_SQLSTATES  # 08: connection


async def _on_store_error(request: Request, exc: Exception) -> JSONResponse:
    if not store_unavailable(exc):
        return await _on_unexpected(request, exc)
    log.warning("store_unavailable", path=request.url.path, error_type=type(exc).__name__)
    return problem_response(
        request,
        503,
        detail="A data store of this service is not answering; retry in a few seconds.",
        headers={"Retry-After": str(STORE_RETRY_AFTER_SECONDS)},
    )


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    # Named here: Starlette calls this handler from its outermost middleware, after the
    # observability middleware has left the request (and its id) behind.
    log.exception(
        "unhandled_error",
        path=request.url.path,
        error_type=type(exc).__name__,
        request_id=getattr(request.state, "request_id", None),
    )
    return problem_response(request, 500, detail="An unexpected error occurred.")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(Problem, _on_problem)
    app.add_exception_handler(StarletteHTTPException, _on_http_exception)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    for store_error in (
        *_REDIS_UNAVAILABLE,
        sqlalchemy.exc.TimeoutError,
        sqlalchemy.exc.DBAPIError,
    ):
        app.add_exception_handler(store_error, _on_store_error)
    app.add_exception_handler(Exception, _on_unexpected)
