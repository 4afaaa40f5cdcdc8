"""Request and response bodies of the waste API (DESIGN.md §4)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, core_schema

from ecosort_common.categories import CategoryCode

AnalysisStatus = Literal["queued", "processing", "completed", "failed"]
UploadContentType = Literal["image/jpeg", "image/png", "image/webp", "image/heic", "image/heif"]
FINISHED_AT = "When the analysis reached its final state, `completed` or `failed`; null until then."


class Links(BaseModel):
    self: str
    events: str


class AnalysisAccepted(BaseModel):
    id: uuid.UUID
    status: AnalysisStatus
    links: Links


class ResultCandidate(BaseModel):
    category: CategoryCode
    confidence: float = Field(ge=0, le=1)


class AnalysisResult(BaseModel):
    """The `result` of a completed analysis, exactly as `pipeline.result_document` builds it."""

    category: CategoryCode | None = Field(description="None when the model is not sure.")
    confidence: float = Field(ge=0, le=1, description="Of the top candidate.")
    candidates: list[ResultCandidate] = Field(description="Best first, at most 3.")
    not_sure: bool
    mapping_note: str = Field(description="How sure the material to disposal-stream step is.")
    guidance: dict[str, Any] | None = Field(
        description="The recycling service's GET /categories/{code} answer for `category`; "
        "None when there is no category or recycling did not answer in time."
    )
    guidance_available: bool
    model_version: str
    head_version: str | None
    provider: str = Field(description="The classifier that answered, e.g. local or openai.")


class _DescribedBy:
    """Validates as the annotated type, but is described in JSON Schema (so in OpenAPI) by
    `model`: for a stored document served as it is, whose shape the model pins down."""

    def __init__(self, model: type[BaseModel]) -> None:
        self.model = model

    def __get_pydantic_json_schema__(
        self, _schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        model = self.model.__pydantic_core_schema__
        # Through a reference, so the model is a named component and not an inline object.
        reference = core_schema.definition_reference_schema(model["ref"])
        return handler(core_schema.definitions_schema(reference, [model]))


class AnalysisView(BaseModel):
    id: uuid.UUID
    status: AnalysisStatus
    progress: int = Field(ge=0, le=100)
    stage: str | None
    # Served as stored, checked only as an object: validating it as AnalysisResult would
    # turn a stored document short of a field into a 500 on the polling path.
    result: Annotated[dict[str, Any], _DescribedBy(AnalysisResult)] | None
    error: str | None
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None = Field(description=FINISHED_AT)
    links: Links


class AnalysisSummary(BaseModel):
    id: uuid.UUID
    status: AnalysisStatus
    progress: int
    stage: str | None
    category: str | None
    confidence: float | None
    created_at: datetime
    completed_at: datetime | None = Field(description=FINISHED_AT)
    links: Links


class CreateFromUpload(BaseModel):
    model_config = ConfigDict(extra="forbid")

    upload_id: uuid.UUID


class UploadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    content_type: UploadContentType = "image/jpeg"


class UploadTicket(BaseModel):
    upload_id: uuid.UUID
    url: str
    fields: dict[str, str]
    method: Literal["POST"] = "POST"
    max_bytes: int
    expires_in: int


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    category: CategoryCode


class CorrectionView(BaseModel):
    id: uuid.UUID
    analysis_id: uuid.UUID
    category: str
    created_at: datetime
