"""The OpenAPI document as the API really answers: what the app's Kotlin and Swift clients are
generated from.

Every error is problem+json (ecosort_common.errors), but FastAPI documents only a 422 of its own
shape, as application/json. So every route is included with a problem+json `default` response
(which also keeps FastAPI from adding its HTTPValidationError), and each operation is given the
errors it can answer with, judged from what the document says it takes:

- 400 with query or header parameters: a well-formed value the route still refuses (a stale
  cursor, a malformed Idempotency-Key or Last-Event-ID); and with a body: one that cannot be
  read at all (JSON not in UTF-8 or nested too deep, a malformed multipart form), which FastAPI
  and Starlette refuse with a 400 of their own before any validation;
- 401 behind a security scheme (the bearer token of ecosort_common.security);
- 404 with path parameters: what they name may not exist, or not be the caller's;
- 422 with any parameter or a body: request validation, with its `errors[]`.

A route's own `responses=` entries win; error ones given only a description get the Problem
schema.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from ecosort_common.errors import PROBLEM_JSON, ProblemBody, ValidationProblemBody

REF_TEMPLATE = "#/components/schemas/{model}"
PROBLEM_SCHEMA = "Problem"
VALIDATION_PROBLEM_SCHEMA = "ValidationProblem"
HTTP_METHODS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})


def problem_content(schema: str = PROBLEM_SCHEMA) -> dict[str, Any]:
    return {PROBLEM_JSON: {"schema": {"$ref": REF_TEMPLATE.format(model=schema)}}}


def _problem(description: str, schema: str = PROBLEM_SCHEMA) -> dict[str, Any]:
    return {"description": description, "content": problem_content(schema)}


# For a route's `responses=`: the header of a 429 or 503 that says when to come back.
RETRY_AFTER_HEADER: dict[str, Any] = {
    "Retry-After": {"schema": {"type": "string"}, "description": "seconds"}
}


# For a 401 that challenges a bearer token (RFC 6750).
WWW_AUTHENTICATE_HEADER: dict[str, Any] = {"WWW-Authenticate": {"schema": {"type": "string"}}}


def retry_later(description: str) -> dict[str, Any]:
    """A route's `responses=` entry for a 429 or 503 that carries Retry-After."""
    return {"description": description, "headers": RETRY_AFTER_HEADER}


# For `include_router(responses=...)`: every route, whatever it takes.
ROUTER_RESPONSES: dict[int | str, dict[str, Any]] = {"default": _problem("Any other error.")}


def install_openapi(app: FastAPI) -> None:
    """Completes the document FastAPI builds (once, when first asked for) with the errors of
    every operation and the Problem schemas."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = generate()
            for path in document.get("paths", {}).values():
                for method, operation in path.items():
                    if method in HTTP_METHODS:
                        document_errors(operation)
            schemas = document.setdefault("components", {}).setdefault("schemas", {})
            for name, schema in problem_schemas().items():
                if schema != schemas.setdefault(name, schema):
                    raise RuntimeError(f"a service's schema {name!r} hides the problem+json one")
        return app.openapi_schema or {}

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's way to extend its document


def document_errors(operation: dict[str, Any]) -> None:
    """Adds the errors an operation can answer with (see the module) to its `responses`."""
    places = {parameter.get("in") for parameter in operation.get("parameters", [])}
    responses: dict[str, Any] = operation.setdefault("responses", {})
    refused: list[str] = []
    if places & {"query", "header"}:
        refused.append("A parameter was refused.")
    if "requestBody" in operation:
        refused.append("The body could not be read.")
    if refused:
        responses.setdefault("400", _problem(" ".join(refused)))
    if operation.get("security"):
        unauthorized = _problem("No access token, or one invalid, expired or revoked.")
        unauthorized["headers"] = WWW_AUTHENTICATE_HEADER
        responses.setdefault("401", unauthorized)
    if "path" in places:
        responses.setdefault("404", _problem("Not found (or not yours)."))
    if places or "requestBody" in operation:
        invalid = _problem("The request did not validate.", VALIDATION_PROBLEM_SCHEMA)
        responses.setdefault("422", invalid)
    for status, response in responses.items():
        if (status[0] in "45" or status == "default") and "content" not in response:
            response["content"] = problem_content()
    operation["responses"] = dict(sorted(responses.items()))


def problem_schemas() -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    for model in (ProblemBody, ValidationProblemBody):
        schema = model.model_json_schema(ref_template=REF_TEMPLATE, mode="serialization")
        schemas.update(schema.pop("$defs", {}))
        schemas[schema["title"]] = schema
    return schemas
