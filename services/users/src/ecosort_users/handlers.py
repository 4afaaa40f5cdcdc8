"""Reactions to other services' events. The common consumer runs each handler in the same
transaction as the record that the event id was processed, so a redelivery is skipped."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import TypeVar

import structlog
from pydantic import AwareDatetime, BaseModel, Field, ValidationError, field_validator
from sqlalchemy.ext.asyncio import AsyncSession

from ecosort_common.events import (
    ANALYSIS_COMPLETED,
    ANALYSIS_CORRECTED,
    USER_REGISTERED,
    Event,
    Handler,
)
from ecosort_users import crud
from ecosort_users.config import Settings
from ecosort_users.schemas import cleaned_nickname

UNCERTAIN = "uncertain"  # waste's answer when the classifier is not sure
log = structlog.get_logger("ecosort.users.events")
Payload = TypeVar("Payload", bound=BaseModel)


class UserRegistered(BaseModel):
    user_id: uuid.UUID
    provider: str | None = Field(default=None, max_length=20)
    nickname: str | None = None
    email: str | None = Field(default=None, max_length=320)

    @field_validator("nickname")
    @classmethod
    def _nickname(cls, value: str | None) -> str | None:
        # PATCH /me's rule: a nickname from sign-in must not hold what a person may not type.
        return cleaned_nickname(value) if value is not None else None


class AnalysisCompleted(BaseModel):
    analysis_id: uuid.UUID
    user_id: uuid.UUID
    category: str | None = Field(default=None, max_length=40)
    confidence: float | None = Field(default=None, ge=0, le=1)
    completed_at: datetime | None = None


class AnalysisCorrected(BaseModel):
    analysis_id: uuid.UUID
    user_id: uuid.UUID
    category: str = Field(min_length=1, max_length=40)
    corrected_at: AwareDatetime


class MalformedEvent(ValueError):
    """Raised so the event stays pending and ends in the dead-letter stream, for a person to
    look at, instead of being silently dropped."""


def _parse(model: type[Payload], event: Event) -> Payload:
    try:
        return model.model_validate(event.payload)
    except ValidationError as exc:
        # Where and what kind, never the input: it may be personal data (an e-mail address), and
        # this line is written again at every redelivery.
        errors = [{"loc": error["loc"], "type": error["type"]} for error in exc.errors()]
        log.error("malformed_event", event_id=event.id, type=event.type, errors=errors)
        raise MalformedEvent(f"{event.type} {event.id}: {exc.error_count()} errors") from exc


def _occurred_at(event: Event) -> datetime:
    try:
        return datetime.fromisoformat(event.occurred_at)
    except ValueError:
        return datetime.now(UTC)


def event_handlers(settings: Settings) -> dict[str, Handler]:
    async def on_user_registered(session: AsyncSession, event: Event) -> None:
        payload = _parse(UserRegistered, event)
        await crud.fill_profile(
            session,
            payload.user_id,
            locale=settings.default_locale,
            nickname=payload.nickname,
            provider=payload.provider,
            email=payload.email,
        )

    async def on_analysis_completed(session: AsyncSession, event: Event) -> None:
        payload = _parse(AnalysisCompleted, event)
        # The profile may not exist yet (user.registered not processed): create it lazily.
        if not await crud.ensure_profile(session, payload.user_id, locale=settings.default_locale):
            log.info("analysis_of_deleted_user_ignored", analysis_id=str(payload.analysis_id))
            return
        completed_at = payload.completed_at or _occurred_at(event)
        if completed_at.tzinfo is None:
            completed_at = completed_at.replace(tzinfo=UTC)
        await crud.record_analysis(
            session,
            analysis_id=payload.analysis_id,
            user_id=payload.user_id,
            category=payload.category or UNCERTAIN,
            confidence=payload.confidence,
            completed_at=completed_at,
        )

    async def on_analysis_corrected(session: AsyncSession, event: Event) -> None:
        payload = _parse(AnalysisCorrected, event)
        outcome = await crud.correct_analysis(
            session,
            analysis_id=payload.analysis_id,
            user_id=payload.user_id,
            category=payload.category,
            corrected_at=payload.corrected_at,
        )
        if outcome == "pending":
            # analysis.completed has not arrived yet: recording it applies the correction.
            log.info("analysis_correction_pending", analysis_id=str(payload.analysis_id))
        elif outcome == "ignored":
            # A later correction is there already, the analysis is someone else's, or the
            # account was deleted.
            log.info("analysis_correction_ignored", analysis_id=str(payload.analysis_id))

    return {
        USER_REGISTERED: on_user_registered,
        ANALYSIS_COMPLETED: on_analysis_completed,
        ANALYSIS_CORRECTED: on_analysis_corrected,
    }
