"""Direct uploads: a presigned form, then an analysis created from the upload id."""

from __future__ import annotations

import io
import uuid
from typing import Any
from urllib.parse import urlsplit

import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from PIL import ExifTags, Image

from ecosort_common.testing import TokenIssuer
from ecosort_waste.models import Analysis
from ecosort_waste.storage import ObjectNotFound

API = "/api/v1/waste"


def gps_png() -> bytes:
    exif = Image.Exif()
    exif[ExifTags.Base.GPSInfo] = {ExifTags.GPS.GPSLatitudeRef: "N"}
    exif[ExifTags.Base.Make] = "DirectUploadPhone"
    buf = io.BytesIO()
    Image.new("RGB", (2000, 1000), (10, 200, 30)).save(buf, format="PNG", exif=exif)
    return buf.getvalue()


@pytest.fixture
def headers(token_issuer: TokenIssuer) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_issuer.token(uuid.uuid4())}"}


async def ticket(client: AsyncClient, headers: dict[str, str], **body: Any) -> dict[str, Any]:
    response = await client.post(f"{API}/uploads", headers=headers, json=body or None)
    assert response.status_code == 201, response.text
    issued: dict[str, Any] = response.json()
    return issued


async def post_form(client: AsyncClient, issued: dict[str, Any], data: bytes) -> Any:
    # The local backend's form posts back to this API (at PUBLIC_BASE_URL in production).
    path = urlsplit(issued["url"]).path
    return await client.post(path, data=issued["fields"], files={"file": ("photo", data)})


async def test_upload_then_create_from_upload_id(
    app: FastAPI, client: AsyncClient, headers: dict[str, str], enqueued: list[uuid.UUID]
) -> None:
    issued = await ticket(client, headers, content_type="image/png")
    assert issued["max_bytes"] == 10 * 1024 * 1024 and issued["method"] == "POST"
    assert urlsplit(issued["url"]).path == f"{API}/uploads/direct"
    assert (await post_form(client, issued, gps_png())).status_code == 204

    body = {"upload_id": issued["upload_id"]}
    created = await client.post(f"{API}/analyses", headers=headers, json=body)
    assert created.status_code == 202, created.text
    assert enqueued == [uuid.UUID(created.json()["id"])]

    async with app.state.sessionmaker() as session:
        stored_row = await session.get(Analysis, uuid.UUID(created.json()["id"]))
    assert stored_row is not None
    stored = app.state.storage.get(stored_row.image_key)
    assert Image.open(io.BytesIO(stored)).size == (1024, 512)
    assert b"DirectUploadPhone" not in stored
    # The original (with its metadata) is gone; only the sanitised copy remains.
    with pytest.raises(ObjectNotFound):
        app.state.storage.get(issued["fields"]["key"])


async def test_upload_id_is_idempotent_with_a_key(
    app: FastAPI, client: AsyncClient, headers: dict[str, str], enqueued: list[uuid.UUID]
) -> None:
    issued = await ticket(client, headers)
    await post_form(client, issued, gps_png())
    keyed = {**headers, "Idempotency-Key": "direct-1"}
    body = {"upload_id": issued["upload_id"]}
    first = await client.post(f"{API}/analyses", headers=keyed, json=body)
    assert first.status_code == 202
    with pytest.raises(ObjectNotFound):
        app.state.storage.get(issued["fields"]["key"])
    # Replayed after the upload object was consumed: still the same analysis.
    second = await client.post(f"{API}/analyses", headers=keyed, json=body)
    assert second.status_code == 202
    assert first.json()["id"] == second.json()["id"]
    assert len(enqueued) == 1
    # Without the key it is a new request, and the upload is gone.
    again = await client.post(f"{API}/analyses", headers=headers, json=body)
    assert again.status_code == 422 and again.json()["title"] == "Unknown upload"


async def test_a_reused_key_leaves_the_unread_upload_alone(
    app: FastAPI, client: AsyncClient, headers: dict[str, str], enqueued: list[uuid.UUID]
) -> None:
    keyed = {**headers, "Idempotency-Key": "direct-2"}
    first, second = await ticket(client, headers), await ticket(client, headers)
    for issued in (first, second):
        await post_form(client, issued, gps_png())
    created = await client.post(
        f"{API}/analyses", headers=keyed, json={"upload_id": first["upload_id"]}
    )
    assert created.status_code == 202
    reused = await client.post(
        f"{API}/analyses", headers=keyed, json={"upload_id": second["upload_id"]}
    )
    assert reused.status_code == 422
    # Refused before it was read: the client can still use it, with a fresh key.
    assert app.state.storage.get(second["fields"]["key"]) == gps_png()
    fresh = await client.post(
        f"{API}/analyses", headers=headers, json={"upload_id": second["upload_id"]}
    )
    assert fresh.status_code == 202


async def test_unknown_or_foreign_upload_ids_are_refused(
    client: AsyncClient, headers: dict[str, str], token_issuer: TokenIssuer
) -> None:
    unknown = await client.post(
        f"{API}/analyses", headers=headers, json={"upload_id": str(uuid.uuid4())}
    )
    assert unknown.status_code == 422 and unknown.json()["title"] == "Unknown upload"

    issued = await ticket(client, headers)
    await post_form(client, issued, gps_png())
    stranger = {"Authorization": f"Bearer {token_issuer.token(uuid.uuid4())}"}
    stolen = await client.post(
        f"{API}/analyses", headers=stranger, json={"upload_id": issued["upload_id"]}
    )
    assert stolen.status_code == 422


@pytest.mark.parametrize(
    ("data", "status"),
    [(b"<html>not an image</html>", 415), (b"\xff\xd8\xff" + b"\0" * 1000, 422)],
    ids=["not-an-image", "truncated-jpeg"],
)
async def test_uploaded_bytes_are_judged_like_any_upload(
    app: FastAPI,
    client: AsyncClient,
    headers: dict[str, str],
    enqueued: list[uuid.UUID],
    data: bytes,
    status: int,
) -> None:
    issued = await ticket(client, headers)
    await post_form(client, issued, data)
    created = await client.post(
        f"{API}/analyses", headers=headers, json={"upload_id": issued["upload_id"]}
    )
    assert created.status_code == status
    assert created.headers["content-type"] == "application/problem+json"
    assert enqueued == []
    # Refused, the original is not kept either: no analysis would ever delete it.
    with pytest.raises(ObjectNotFound):
        app.state.storage.get(issued["fields"]["key"])


async def test_direct_upload_form_is_enforced(client: AsyncClient, headers: dict[str, str]) -> None:
    issued = await ticket(client, headers)
    tampered = {**issued, "fields": {**issued["fields"], "key": "images/someone/else.jpg"}}
    refused = await post_form(client, tampered, b"x")
    assert refused.status_code == 403
    assert refused.headers["content-type"] == "application/problem+json"

    small = await ticket(client, headers)
    small["fields"] = dict(small["fields"])
    too_big = await post_form(client, small, b"\0" * (10 * 1024 * 1024 + 1))
    assert too_big.status_code == 413

    refused_type = await client.post(
        f"{API}/uploads", headers=headers, json={"content_type": "application/pdf"}
    )
    assert refused_type.status_code == 422
    assert (await client.post(f"{API}/uploads")).status_code == 401
