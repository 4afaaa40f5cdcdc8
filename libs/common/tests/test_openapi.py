"""The OpenAPI document says what the API really answers: problem+json errors of the Problem
schema (never FastAPI's HTTPValidationError) and the bearer token, for generated clients."""

from __future__ import annotations

from typing import Any

from httpx import AsyncClient

from ecosort_common.errors import PROBLEM_JSON, ProblemBody, ValidationProblemBody
from ecosort_common.testing import (
    check_documented_errors,
    check_unreadable_body,
    problem_schema_name,
)

API = "/api/v1/demo"


async def _document(client: AsyncClient) -> dict[str, Any]:
    response = await client.get(f"{API}/openapi.json")
    assert response.status_code == 200
    document: dict[str, Any] = response.json()
    return document


async def test_errors_are_documented_as_problem_json(client: AsyncClient) -> None:
    document = await _document(client)
    check_documented_errors(document)
    schemas = document["components"]["schemas"]
    assert {"HTTPValidationError", "ValidationError"}.isdisjoint(schemas)
    echo = document["paths"][f"{API}/echo"]["post"]["responses"]
    assert problem_schema_name(echo["422"]) == "ValidationProblem"
    assert problem_schema_name(echo["default"]) == "Problem"
    assert "401" not in echo  # no token needed there
    problem = schemas["Problem"]
    # Not `instance`: the gateway's own problems have none (RFC 9457 makes it optional).
    assert set(problem["required"]) == {"type", "title", "status"}
    assert problem["properties"]["instance"]["type"] == "string"
    assert problem["properties"]["detail"] == {"title": "Detail", "type": "string"}
    field_error = schemas["ValidationProblem"]["properties"]["errors"]["items"]
    assert field_error == {"$ref": "#/components/schemas/FieldError"}
    assert set(schemas["FieldError"]["required"]) == {"loc", "msg", "type"}


async def test_path_and_query_parameters_document_404_400_and_422(client: AsyncClient) -> None:
    note = (await _document(client))["paths"][f"{API}/notes/{{note_id}}"]["get"]["responses"]
    assert {problem_schema_name(note[s]) for s in ("400", "404", "default")} == {"Problem"}
    assert problem_schema_name(note["422"]) == "ValidationProblem"
    teapot = (await _document(client))["paths"][f"{API}/teapot"]["get"]["responses"]
    assert sorted(teapot) == ["200", "default"]  # it takes nothing that could be refused


async def test_a_body_documents_the_400_of_one_that_cannot_be_read(client: AsyncClient) -> None:
    await check_unreadable_body(client, "POST", f"{API}/echo")
    echo = (await _document(client))["paths"][f"{API}/echo"]["post"]["responses"]
    assert echo["400"]["description"] == "The body could not be read."
    assert problem_schema_name(echo["400"]) == "Problem"


async def test_authenticated_routes_declare_the_bearer_scheme_and_401(
    client: AsyncClient,
) -> None:
    document = await _document(client)
    assert document["components"]["securitySchemes"] == {
        "bearerAuth": {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": "An access token from the auth service.",
        }
    }
    me = document["paths"][f"{API}/me"]["get"]
    assert me["security"] == [{"bearerAuth": []}]
    assert problem_schema_name(me["responses"]["401"]) == "Problem"
    assert "WWW-Authenticate" in me["responses"]["401"]["headers"]
    # Declaring the scheme changed nothing of the answer itself.
    for headers in ({}, {"Authorization": "Basic abc"}, {"Authorization": "Bearer "}):
        refused = await client.get(f"{API}/me", headers=headers)
        assert (refused.status_code, refused.headers["www-authenticate"]) == (401, "Bearer")
        assert refused.headers["content-type"] == PROBLEM_JSON


async def test_the_schemas_match_the_bodies_sent(client: AsyncClient) -> None:
    invalid = (await client.post(f"{API}/echo", json={"count": "many"})).json()
    assert set(invalid) <= set(ValidationProblemBody.model_fields)
    assert ValidationProblemBody.model_validate(invalid).errors
    for path, headers in (
        ("/teapot", {}),
        ("/notes/7", {}),
        ("/me", {"Authorization": "Bearer not-a-jwt"}),
        ("/boom", {}),
    ):
        body = (await client.get(f"{API}{path}", headers=headers)).json()
        ProblemBody.model_validate(body)
        assert set(ProblemBody.model_fields) - {"detail"} <= set(body), path
