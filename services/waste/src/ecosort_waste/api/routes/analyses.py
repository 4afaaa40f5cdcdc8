"""Creating and reading analyses, and correcting their category."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Header, Query, Request, Response
from pydantic import ValidationError
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from ecosort_common.errors import Problem
from ecosort_common.pagination import MAX_PAGE_SIZE, Page
from ecosort_common.security import Principal, current_principal
from ecosort_waste import crud, images, progress
from ecosort_waste.api.body_limit import capped_body
from ecosort_waste.api.deps import (
    CurrentUser,
    DbSession,
    Enqueue,
    EnqueueDep,
    ReadSession,
    StorageDep,
    analysis_links,
)
from ecosort_waste.api.plain_routes import path_uuid, served_by
from ecosort_waste.api.schemas import (
    AnalysisAccepted,
    AnalysisSummary,
    AnalysisView,
    CorrectionView,
    CreateFromUpload,
    FeedbackRequest,
)
from ecosort_waste.api.view_cache import AnalysisViewCache
from ecosort_waste.idempotency import (
    AccountDeleted,
    NewAnalysis,
    UploadAlreadyUsed,
    create_or_replay,
    request_hash,
    validate_key,
)
from ecosort_waste.models import FINAL_STATUSES, Analysis
from ecosort_waste.sse import ProgressHub
from ecosort_waste.storage import ObjectNotFound, Storage, incoming_key

router = APIRouter(tags=["analyses"])
log = structlog.get_logger(__name__)

# {"upload_id": "<uuid>"} is some fifty bytes; whitespace and all, this is plenty.
UPLOAD_REFERENCE_MAX_BYTES = 4 * 1024

CREATE_BODY_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["image"],
                    "properties": {"image": {"type": "string", "format": "binary"}},
                }
            },
            "application/json": {"schema": CreateFromUpload.model_json_schema()},
        },
    }
}
CREATE_RESPONSES: dict[int | str, dict[str, Any]] = {
    202: {
        "description": "Queued, or the analysis this key or upload already made.",
        "headers": {"Location": {"schema": {"type": "string"}, "description": "links.self"}},
    },
    409: {"description": "The upload_id already made an analysis (under another key or none)."},
    410: {"description": "The account was deleted (its token is not revoked yet)."},
    413: {"description": "The image is over 10 MB."},
    415: {"description": "Not a JPEG, PNG, WebP or HEIC/HEIF image."},
    422: {
        "description": "Corrupt or truncated image, too many pixels, a reused key, or an "
        "upload_id with no uploaded object (never uploaded, expired, or not yours)."
    },
}


@router.post(
    "/analyses",
    status_code=202,
    response_model=AnalysisAccepted,
    openapi_extra=CREATE_BODY_DOC,
    responses=CREATE_RESPONSES,
    summary="Upload a photo (multipart `image`) or name a direct upload (`upload_id`)",
)
async def create_analysis(
    request: Request,
    response: Response,
    user: CurrentUser,
    session: DbSession,
    storage: StorageDep,
    enqueue: EnqueueDep,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> AnalysisAccepted:
    with image_problems():
        return await _create_analysis(
            request, response, user, session, storage, enqueue, idempotency_key
        )


@contextmanager
def image_problems() -> Iterator[None]:
    """An image refused anywhere below (size, type, decoding) becomes its problem+json."""
    try:
        yield
    except images.ImageRejected as exc:
        raise Problem(exc.status, exc.detail, title=exc.title) from exc


async def _create_analysis(
    request: Request,
    response: Response,
    user: Principal,
    session: AsyncSession,
    storage: Storage,
    enqueue: Enqueue,
    idempotency_key: str | None,
) -> AnalysisAccepted:
    key = validate_key(idempotency_key)
    content_type = request.headers.get("content-type", "").lower()
    original: str | None = None
    load: Callable[[], Awaitable[images.SanitisedImage | None]]
    if content_type.startswith("multipart/form-data"):
        raw = await _read_multipart_image(request)
        new = NewAnalysis(user.user_id, key, request_hash("image", raw))
        load = partial(run_in_threadpool, images.sanitise, raw)
    elif content_type.startswith("application/json"):
        reference = capped_body(
            request, "The JSON body is only an upload id.", max_bytes=UPLOAD_REFERENCE_MAX_BYTES
        )
        upload_id = _parse_upload_reference(await reference.body())
        original = incoming_key(user.user_id, upload_id)
        new = NewAnalysis(user.user_id, key, request_hash("upload", upload_id.bytes), upload_id)
        # Read from storage only if this is not a replay.
        load = partial(run_in_threadpool, _load_upload, storage, original)
    else:
        raise Problem(
            415,
            'Send the photo as multipart/form-data (field `image`) or JSON {"upload_id"}.',
            title="Unsupported request body",
        )

    try:
        outcome = await create_or_replay(session, storage, new, load)
    except (images.ImageRejected, UploadAlreadyUsed, AccountDeleted):
        # Refused for its bytes, spent, or its owner gone: nothing will ever read this original
        # again, and it may carry GPS and other metadata.
        if original is not None:
            await _discard_original(storage, original)
        raise
    if outcome.created:
        if original is not None:
            # Read once: the analysis has its sanitised copy. Any other refusal, a replay or an
            # error leaves it, for the client to retry with (or for the reaper's sweep).
            await _discard_original(storage, original)
        await _enqueue(enqueue, outcome.analysis_id)
    links = analysis_links(outcome.analysis_id)
    response.headers["Location"] = links["self"]
    return AnalysisAccepted.model_validate(
        {"id": outcome.analysis_id, "status": outcome.status, "links": links}
    )


async def _read_multipart_image(request: Request) -> bytes:
    limited = capped_body(
        request,
        f"The image is over the limit of {images.MAX_UPLOAD_BYTES} bytes.",
        title=images.ImageTooLarge.title,
    )
    async with limited.form(max_files=1, max_fields=8) as form:
        image = form.get("image")
        if not isinstance(image, UploadFile):
            raise Problem(
                422,
                "The multipart body needs a file field named `image`.",
                title="Missing image",
            )
        if image.size is not None:
            images.check_size(image.size)
        data = await image.read(images.MAX_UPLOAD_BYTES + 1)
    images.check_size(len(data))
    return data


def _parse_upload_reference(body: bytes) -> uuid.UUID:
    try:
        return CreateFromUpload.model_validate_json(body).upload_id
    except ValidationError as exc:
        raise Problem(
            422,
            'The JSON body must be {"upload_id": "<id from POST /uploads>"}.',
            title="Request validation failed",
            errors=[{"loc": [str(p) for p in e["loc"]], "msg": e["msg"]} for e in exc.errors()],
        ) from exc


def _load_upload(storage: Storage, key: str) -> images.SanitisedImage | None:
    """The upload, sanitised; None if there is none (never uploaded, or consumed by an earlier
    request: the caller tells a replay from an unknown upload)."""
    try:
        images.check_size(storage.size(key))
        data = storage.get(key)
    except ObjectNotFound:
        return None
    return images.sanitise(data)


async def _discard_original(storage: Storage, key: str) -> None:
    try:
        await run_in_threadpool(storage.delete, key)
    except Exception:
        # The answer stands without it: the reaper's sweep of unread uploads removes it later.
        log.exception("upload_original_not_deleted", key=key)


async def _enqueue(enqueue: Enqueue, analysis_id: uuid.UUID) -> None:
    try:
        await run_in_threadpool(enqueue, analysis_id)
    except Exception:
        # The analysis is committed as `queued`; the reaper re-queues what never started.
        log.exception("enqueue_failed", analysis_id=str(analysis_id))


async def poll_analysis(request: Request) -> Response:
    """`GET /analyses/{analysis_id}`, the path every polling client hits, as a plain Starlette
    handler: FastAPI's per-request dependency resolution was a third of its CPU time
    (bench/README.md). It runs the same authentication dependency, called directly."""
    user = await current_principal(request)  # first, as on every route: 401 before 422
    analysis_id = path_uuid(request, "analysis_id")
    state = request.app.state
    hub: ProgressHub = state.progress_hub
    views: AnalysisViewCache = state.analysis_views
    live = await _live_state(hub, state.redis, str(analysis_id))

    async def read_view() -> AnalysisView:
        async with state.read_sessionmaker() as session:
            return _view(await _owned_or_404(session, analysis_id, user.user_id))

    view = await views.get(user.user_id, analysis_id, live.get("seq", ""), read_view)
    if view.status not in FINAL_STATUSES:
        view = _with_live_progress(view, live)
    # Serialised here: the view is already validated.
    return Response(view.model_dump_json(), media_type="application/json")


async def get_analysis(analysis_id: uuid.UUID, user: CurrentUser) -> AnalysisView:
    """Status, progress (0-100), stage, result and error of one of your analyses."""
    raise NotImplementedError("served by poll_analysis")  # pragma: no cover


router.add_api_route(
    "/analyses/{analysis_id}",
    get_analysis,
    methods=["GET"],
    response_model=AnalysisView,
    route_class_override=served_by(poll_analysis),
)


async def _live_state(hub: ProgressHub, redis: Redis, analysis_id: str) -> dict[str, str]:
    """The state hash, as the hub keeps it or else from Redis (then kept by the hub)."""
    known = hub.state_of(analysis_id)
    if known is not None:
        return known
    generation = hub.generation
    try:
        state = await progress.read_state(redis, analysis_id)
    except Exception:  # progress is a nicety; the database answer stands on its own
        log.warning("progress_state_unavailable", analysis_id=analysis_id)
        return {}
    hub.keep_state(analysis_id, state, generation)
    return state


def _with_live_progress(view: AnalysisView, state: dict[str, str]) -> AnalysisView:
    """The pipeline publishes progress to Redis more often than it writes the database."""
    update: dict[str, Any] = {}
    # Only "processing" is taken from Redis: a final status comes with a result in the database.
    if state.get("status") == "processing":
        update["status"] = "processing"
    if state.get("stage"):
        update["stage"] = state["stage"]
    live = state.get("progress", "")
    if live.isdigit() and update.get("status", view.status) != "queued":
        update["progress"] = max(view.progress, min(int(live), 99))
    # A copy: the cached view stays as the database said.
    return view.model_copy(update=update) if update else view


@router.get("/analyses", response_model=Page[AnalysisSummary])
async def list_analyses(
    user: CurrentUser,
    session: ReadSession,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 20,
) -> Page[Any]:
    return await crud.list_owned(session, user.user_id, cursor=cursor, limit=limit, item=_summary)


@router.post(
    "/analyses/{analysis_id}/feedback",
    status_code=201,
    response_model=CorrectionView,
    responses={
        201: {"description": "The analysis's first correction."},
        200: {"model": CorrectionView, "description": "It replaced the earlier correction."},
        409: {"description": "The analysis has not finished yet."},
    },
    summary="Correct a finished analysis's category (a later correction replaces it)",
)
async def add_feedback(
    analysis_id: uuid.UUID,
    body: FeedbackRequest,
    user: CurrentUser,
    session: DbSession,
    response: Response,
) -> CorrectionView:
    analysis = await _owned_or_404(session, analysis_id, user.user_id, keep=True)
    if analysis.status not in FINAL_STATUSES:
        # Nothing to correct yet; a failed analysis may still be told what its photo shows.
        raise Problem(
            409,
            f"The analysis is {analysis.status}: send feedback once it has finished.",
            title="Analysis not finished",
        )
    correction, first = await crud.set_correction(session, analysis, body.category)
    await session.commit()
    if not first:
        response.status_code = 200
    return CorrectionView.model_validate(correction, from_attributes=True)


async def _owned_or_404(
    session: AsyncSession, analysis_id: uuid.UUID, owner_id: uuid.UUID, *, keep: bool = False
) -> Analysis:
    analysis = await crud.get_owned(session, analysis_id, owner_id, keep=keep)
    if analysis is None:
        # Someone else's analysis gets the same answer as a missing one: ids are not disclosed.
        raise Problem(404, f"No analysis {analysis_id}.", title="Analysis not found")
    return analysis


def _view(analysis: Analysis) -> AnalysisView:
    return AnalysisView.model_validate(
        {
            "id": analysis.id,
            "status": analysis.status,
            "progress": analysis.progress,
            "stage": analysis.stage,
            "result": analysis.result,
            "error": analysis.error,
            "created_at": analysis.created_at,
            "updated_at": analysis.updated_at,
            "completed_at": analysis.completed_at,
            "links": analysis_links(analysis.id),
        }
    )


def _summary(analysis: Analysis) -> AnalysisSummary:
    result = analysis.result or {}
    return AnalysisSummary.model_validate(
        {
            "id": analysis.id,
            "status": analysis.status,
            "progress": analysis.progress,
            "stage": analysis.stage,
            "category": result.get("category"),
            "confidence": result.get("confidence"),
            "created_at": analysis.created_at,
            "completed_at": analysis.completed_at,
            "links": analysis_links(analysis.id),
        }
    )
