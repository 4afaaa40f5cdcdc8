"""Direct uploads: a presigned form so the photo's bytes need not pass through the API.

With S3 the client posts straight to the bucket; with local storage it posts to
``/uploads/direct`` here, which checks the signed form the same way S3 checks its policy.
The analysis is then created from the upload id (``POST /analyses`` with ``{"upload_id"}``).
"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Body, Request, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from ecosort_common.errors import Problem
from ecosort_waste import crud, images
from ecosort_waste.api.body_limit import capped_body
from ecosort_waste.api.deps import CurrentUser, ReadSession, SettingsDep, StorageDep
from ecosort_waste.api.schemas import UploadRequest, UploadTicket
from ecosort_waste.idempotency import AccountDeleted
from ecosort_waste.storage import LocalStorage, UploadFormRejected, incoming_key

router = APIRouter(tags=["uploads"])


@router.post(
    "/uploads",
    status_code=201,
    response_model=UploadTicket,
    responses={410: {"description": "The account was deleted (its token is not revoked yet)."}},
)
async def create_upload(
    user: CurrentUser,
    storage: StorageDep,
    settings: SettingsDep,
    session: ReadSession,
    body: Annotated[UploadRequest | None, Body()] = None,
) -> UploadTicket:
    if await crud.is_deleted(session, user.user_id):
        raise AccountDeleted()  # no analysis could be made from the upload
    request = body or UploadRequest()
    upload_id = uuid.uuid4()
    url, fields = await run_in_threadpool(
        storage.presign_upload,
        incoming_key(user.user_id, upload_id),
        request.content_type,
        images.MAX_UPLOAD_BYTES,
    )
    return UploadTicket(
        upload_id=upload_id,
        url=url,
        fields=fields,
        max_bytes=images.MAX_UPLOAD_BYTES,
        expires_in=settings.upload_expires_seconds,
    )


@router.post("/uploads/direct", status_code=204, include_in_schema=False)
async def receive_direct_upload(request: Request, storage: StorageDep) -> Response:
    """The local stand-in for S3's presigned POST: the signed fields are the authorisation."""
    if not isinstance(storage, LocalStorage):
        raise Problem(404, "Direct uploads go to the object store, not to this API.")
    # Starlette parses the whole form before the signature can be checked: with no login
    # needed, the cap is what bounds the bytes anyone can make this read.
    limited = capped_body(request, "The upload is over the limit of its form.")
    async with limited.form(max_files=1, max_fields=10) as form:
        fields = {name: value for name, value in form.items() if isinstance(value, str)}
        upload = form.get("file")
        try:
            key = storage.verify_upload_form(fields)
        except UploadFormRejected as exc:
            raise Problem(403, str(exc).capitalize() + ".", title="Upload refused") from exc
        if not isinstance(upload, UploadFile):
            raise Problem(422, "The form needs a file field named `file`.", title="Missing file")
        max_bytes = int(fields["max_bytes"])
        data = await upload.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise Problem(413, f"The upload is over the limit of {max_bytes} bytes.")
    if not data:
        raise Problem(422, "The uploaded file is empty.", title="Empty upload")
    await run_in_threadpool(storage.put, key, data, fields["Content-Type"])
    return Response(status_code=204)
