"""What the mobile app's generated clients read: the waste API's errors, token and result."""

from __future__ import annotations

import json
from typing import Any

import pytest
from httpx import AsyncClient

from ecosort_common.testing import problem_schema_name
from ecosort_waste.api.schemas import AnalysisResult
from ecosort_waste.classifier.base import Candidate, Classification
from ecosort_waste.classifier.registry import ProviderAnswer
from ecosort_waste.pipeline import result_document

API = "/api/v1/waste"
RESULT_FIELDS = {
    "category",
    "confidence",
    "candidates",
    "not_sure",
    "mapping_note",
    "guidance",
    "guidance_available",
    "model_version",
    "head_version",
    "provider",
}


@pytest.fixture
async def document(client: AsyncClient) -> dict[str, Any]:
    served: dict[str, Any] = (await client.get(f"{API}/openapi.json")).json()
    return served


async def test_the_create_route_documents_its_errors_as_problems(document: dict[str, Any]) -> None:
    create = document["paths"][f"{API}/analyses"]["post"]
    assert create["security"] == [{"bearerAuth": []}]
    responses = create["responses"]
    for status in ("400", "401", "413", "415", "422"):
        assert problem_schema_name(responses[status]) == "Problem", status
    assert "10 MB" in responses["413"]["description"]
    assert "Location" in responses["202"]["headers"]
    schema = responses["202"]["content"]["application/json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/AnalysisAccepted"}


async def test_the_polling_route_documents_its_errors(document: dict[str, Any]) -> None:
    responses = document["paths"][f"{API}/analyses/{{analysis_id}}"]["get"]["responses"]
    assert problem_schema_name(responses["401"]) == "Problem"
    assert problem_schema_name(responses["404"]) == "Problem"
    assert problem_schema_name(responses["422"]) == "ValidationProblem"
    assert "HTTPValidationError" not in str(document)


async def test_the_feedback_route_documents_created_and_replaced(
    document: dict[str, Any],
) -> None:
    responses = document["paths"][f"{API}/analyses/{{analysis_id}}/feedback"]["post"]["responses"]
    correction = {"$ref": "#/components/schemas/CorrectionView"}
    for status in ("200", "201"):  # the first correction, and one replacing it
        assert responses[status]["content"]["application/json"]["schema"] == correction
    for status in ("401", "404", "409"):
        assert problem_schema_name(responses[status]) == "Problem", status
    assert problem_schema_name(responses["422"]) == "ValidationProblem"


async def test_the_result_is_typed(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    result = schemas["AnalysisView"]["properties"]["result"]
    assert {"$ref": "#/components/schemas/AnalysisResult"} in result["anyOf"]
    described = schemas["AnalysisResult"]
    assert set(described["properties"]) == RESULT_FIELDS
    assert set(described["required"]) == RESULT_FIELDS
    assert "paper_pack" in described["properties"]["category"]["anyOf"][0]["enum"]
    candidate = described["properties"]["candidates"]["items"]["$ref"].rsplit("/", 1)[1]
    assert set(schemas[candidate]["required"]) == {"category", "confidence"}


@pytest.mark.parametrize("guidance", [None, {"code": "can", "name_ko": "캔"}])
@pytest.mark.parametrize("sure", [True, False])
def test_the_result_model_is_what_the_pipeline_stores(
    guidance: dict[str, Any] | None, sure: bool
) -> None:
    answer = ProviderAnswer(
        Classification(
            category="can" if sure else None,
            confidence=0.91234567,
            candidates=[Candidate("can", 0.91), Candidate("scrap_metal", 0.05)],
            not_sure=not sure,
            model_version="efficientnet@1a2b",
            head_version=None if sure else "head-v2",
            mapping_note="fairly sure",
        ),
        provider="local",
    )
    stored = result_document(answer, guidance)
    assert set(stored) == set(AnalysisResult.model_fields) == RESULT_FIELDS
    # Types too: the stored document, as JSON, is a valid result and loses nothing.
    validated = AnalysisResult.model_validate_json(json.dumps(stored), strict=True)
    assert validated.model_dump(mode="json") == stored
