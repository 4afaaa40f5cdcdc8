"""Request and response bodies of the waste API (DESIGN.md §4)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ecosort_common.categories import CategoryCode

AnalysisStatus = Literal["queued", "processing", "completed", "failed"]
UploadContentType = Literal["image/jpeg", "image/png", "image/webp", "image/heic", "image/heif"]


class Links(BaseModel):
    self: str
    events: str


class AnalysisAccepted(BaseModel):
    id: uuid.UUID
    status: AnalysisStatus
    links: Links


class AnalysisView(BaseModel):
    id: uuid.UUID
    status: AnalysisStatus
    progress: int = Field(ge=0, le=100)
    stage: str | None
    result: dict[str, Any] | None
    error: str | None
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None
    links: Links


class AnalysisSummary(BaseModel):
    id: uuid.UUID
    status: AnalysisStatus
    progress: int
    stage: str | None
    category: str | None
    confidence: float | None
    created_at: datetime
    completed_at: datetime | None
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
