"""Direct uploads: a presigned form, then an analysis created from the upload id."""

from __future__ import annotations

import asyncio
import io
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from botocore.stub import Stubber
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient
from moto import mock_aws
from PIL import ExifTags, Image
from sqlalchemy import func, select

from ecosort_common.testing import TokenIssuer
from ecosort_waste.config import Settings
from ecosort_waste.models import Analysis
from ecosort_waste.storage import ObjectNotFound, S3Storage, storage_from_settings

from .conftest import Gate, stored_images
from .test_images import png_header_only

API = "/api/v1/waste"
REGION = "ap-northeast-2"


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
    # Without the key it is a new request, and the upload is spent.
    again = await client.post(f"{API}/analyses", headers=headers, json=body)
    assert again.status_code == 409 and again.json()["title"] == "Upload already used"


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


def png(colour: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (200, 100), colour).save(buf, format="PNG")
    return buf.getvalue()


async def row_of(app: FastAPI, created: Any) -> Analysis:
    async with app.state.sessionmaker() as session:
        found = await session.get(Analysis, uuid.UUID(created.json()["id"]))
    assert found is not None
    return found


async def count_owned(app: FastAPI, owner: uuid.UUID) -> int:
    async with app.state.sessionmaker() as session:
        stmt = select(func.count()).select_from(Analysis).where(Analysis.owner_id == owner)
        return int((await session.execute(stmt)).scalar_one())


async def test_a_duplicate_reading_after_the_first_consumed_the_upload_replays(
    app: FastAPI,
    client: AsyncClient,
    headers: dict[str, str],
    enqueued: list[uuid.UUID],
    gate: Gate,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    issued = await ticket(client, headers)
    await post_form(client, issued, png((1, 2, 3)))
    storage = app.state.storage
    monkeypatch.setattr(storage, "size", gate.wrap(storage.size))
    keyed = {**headers, "Idempotency-Key": "retried"}
    body = {"upload_id": issued["upload_id"]}
    # The duplicate finds no analysis for the key, then reads storage only once the first
    # request has committed its analysis and deleted the upload.
    duplicate = asyncio.create_task(client.post(f"{API}/analyses", headers=keyed, json=body))
    await gate.entered()
    first = await client.post(f"{API}/analyses", headers=keyed, json=body)
    gate.release()
    second = await duplicate
    assert first.status_code == second.status_code == 202, second.text
    assert first.json()["id"] == second.json()["id"]
    assert len(enqueued) == 1


async def test_a_key_race_loser_keeps_its_upload_and_stores_nothing(
    app: FastAPI,
    client: AsyncClient,
    headers: dict[str, str],
    enqueued: list[uuid.UUID],
    gate: Gate,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first, second = await ticket(client, headers), await ticket(client, headers)
    await post_form(client, first, png((10, 20, 30)))
    await post_form(client, second, png((200, 100, 0)))
    storage = app.state.storage
    monkeypatch.setattr(storage, "size", gate.wrap(storage.size))
    keyed = {**headers, "Idempotency-Key": "one-key"}
    # The loser finds no analysis for the key, then reads its upload after the winner is done.
    loser = asyncio.create_task(
        client.post(f"{API}/analyses", headers=keyed, json={"upload_id": second["upload_id"]})
    )
    await gate.entered()
    winner = await client.post(
        f"{API}/analyses", headers=keyed, json={"upload_id": first["upload_id"]}
    )
    gate.release()
    assert winner.status_code == 202, winner.text
    refused = await loser
    assert refused.status_code == 422 and refused.json()["title"] == "Idempotency-Key reused"
    # Refused, its upload is still the client's to use (with another key), and nothing of it
    # was stored.
    assert storage.get(second["fields"]["key"]) == png((200, 100, 0))
    stored_row = await row_of(app, winner)
    assert stored_images(app, stored_row.owner_id) == {stored_row.image_key}


async def test_an_upload_makes_one_analysis(
    app: FastAPI, client: AsyncClient, headers: dict[str, str], enqueued: list[uuid.UUID]
) -> None:
    issued = await ticket(client, headers)
    await post_form(client, issued, png((5, 6, 7)))
    body = {"upload_id": issued["upload_id"]}
    keyed = {**headers, "Idempotency-Key": "made-once"}
    created = await client.post(f"{API}/analyses", headers=keyed, json=body)
    assert created.status_code == 202
    # The form is still valid: posted again, it re-creates the object under the same id.
    assert (await post_form(client, issued, png((5, 6, 7)))).status_code == 204
    for other in (headers, {**headers, "Idempotency-Key": "another-key"}):
        refused = await client.post(f"{API}/analyses", headers=other, json=body)
        assert refused.status_code == 409, refused.text
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.json()["title"] == "Upload already used"
    # Spent: nothing will ever read the object posted again.
    with pytest.raises(ObjectNotFound):
        app.state.storage.get(issued["fields"]["key"])
    replayed = await client.post(f"{API}/analyses", headers=keyed, json=body)
    assert replayed.status_code == 202 and replayed.json()["id"] == created.json()["id"]
    assert await count_owned(app, (await row_of(app, created)).owner_id) == 1
    assert len(enqueued) == 1


async def test_concurrent_uses_of_one_upload_make_one_analysis(
    app: FastAPI,
    client: AsyncClient,
    headers: dict[str, str],
    enqueued: list[uuid.UUID],
    gate: Gate,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    issued = await ticket(client, headers)
    await post_form(client, issued, png((9, 9, 9)))
    storage = app.state.storage
    monkeypatch.setattr(storage, "put", gate.wrap(storage.put))
    body = {"upload_id": issued["upload_id"]}
    # Without keys nothing serialises them: the loser stores its copy while the winner commits.
    loser = asyncio.create_task(client.post(f"{API}/analyses", headers=headers, json=body))
    await gate.entered()
    winner = await client.post(f"{API}/analyses", headers=headers, json=body)
    gate.release()
    assert winner.status_code == 202, winner.text
    assert (await loser).status_code == 409
    # One photo, one object: what the loser wrote is the winner's, and it stays.
    stored_row = await row_of(app, winner)
    assert storage.get(stored_row.image_key)
    assert stored_images(app, stored_row.owner_id) == {stored_row.image_key}
    assert await count_owned(app, stored_row.owner_id) == 1
    assert len(enqueued) == 1


@pytest.mark.usefixtures("enqueued")
async def test_unknown_or_foreign_upload_ids_are_refused(
    app: FastAPI, client: AsyncClient, headers: dict[str, str], token_issuer: TokenIssuer
) -> None:
    unknown = await client.post(
        f"{API}/analyses", headers=headers, json={"upload_id": str(uuid.uuid4())}
    )
    assert unknown.status_code == 422 and unknown.json()["title"] == "Unknown upload"

    issued = await ticket(client, headers)
    await post_form(client, issued, gps_png())
    stranger = {"Authorization": f"Bearer {token_issuer.token(uuid.uuid4())}"}
    body = {"upload_id": issued["upload_id"]}
    stolen = await client.post(f"{API}/analyses", headers=stranger, json=body)
    # Someone else's upload is answered as one that does not exist: nothing tells them apart.
    assert (stolen.status_code, stolen.json()["title"]) == (422, "Unknown upload")
    assert stolen.json()["detail"] == unknown.json()["detail"]
    # Nor does the stranger's try cost the owner anything.
    assert app.state.storage.get(issued["fields"]["key"]) == gps_png()
    assert (await client.post(f"{API}/analyses", headers=headers, json=body)).status_code == 202
    # Once spent, it is still unknown to them (not "already used", which would tell).
    again = await client.post(f"{API}/analyses", headers=stranger, json=body)
    assert (again.status_code, again.json()["title"]) == (422, "Unknown upload")


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


async def test_a_forged_signature_of_any_characters_is_refused(
    client: AsyncClient, headers: dict[str, str]
) -> None:
    # The route needs no login: whatever a stranger puts in the signature field is a 403, not
    # a 500 (hmac.compare_digest refuses to compare str holding non-ASCII characters).
    issued = await ticket(client, headers)
    forged = {**issued, "fields": {**issued["fields"], "signature": "서명" * 32}}
    refused = await post_form(client, forged, b"x")
    assert refused.status_code == 403
    assert refused.headers["content-type"] == "application/problem+json"


@pytest.fixture
async def s3_client(
    app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[AsyncClient, S3Storage]]:
    """The app on an S3 bucket (moto stands in for AWS; boto3 is the client), and a client that
    sees what the app answers to an unexpected error rather than the error itself."""
    with mock_aws():
        bucket = "ecosort-private-bucket"
        # Built from settings, as the app builds it: the same client, timeouts and retries.
        storage = storage_from_settings(
            Settings(storage_backend="s3", s3_bucket=bucket, s3_prefix="waste", s3_region=REGION)
        )
        assert isinstance(storage, S3Storage)
        storage._client.create_bucket(
            Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION}
        )
        monkeypatch.setattr(app.state, "storage", storage)
        transport = ASGITransport(app=app, raise_app_exceptions=False)
        async with AsyncClient(transport=transport, base_url="http://test") as http:
            yield http, storage


async def post_to_bucket(issued: dict[str, Any], data: bytes) -> int:
    """The client's direct upload, straight to the bucket (moto intercepts `requests`)."""
    posted = await asyncio.to_thread(
        requests.post, issued["url"], data=issued["fields"], files={"file": ("p", data)}, timeout=5
    )
    return posted.status_code


def incoming_objects(storage: S3Storage) -> list[str]:
    listed = storage._client.list_objects_v2(Bucket=storage.bucket, Prefix="waste/incoming/")
    return [item["Key"] for item in listed.get("Contents", [])]


async def test_s3_busy_or_failing_is_a_503_to_retry_that_names_no_bucket(
    s3_client: tuple[AsyncClient, S3Storage], headers: dict[str, str], enqueued: list[uuid.UUID]
) -> None:
    client, storage = s3_client
    issued = await ticket(client, headers, content_type="image/png")
    assert await post_to_bucket(issued, gps_png()) == 204
    body = {"upload_id": issued["upload_id"]}
    # What S3 answers once boto3's retries are spent: busy, or failing.
    for code, status in (("SlowDown", 503), ("InternalError", 500)):
        with Stubber(storage._client) as s3:
            s3.add_client_error(
                "head_object",
                service_error_code=code,
                service_message=f"S3 at {storage.bucket}.s3.ap-northeast-2.amazonaws.com",
                http_status_code=status,
            )
            refused = await client.post(f"{API}/analyses", headers=headers, json=body)
        assert refused.status_code == 503, refused.text
        assert refused.headers["content-type"] == "application/problem+json"
        assert int(refused.headers["Retry-After"]) > 0
        assert storage.bucket not in refused.text and "amazonaws" not in refused.text
    assert enqueued == []
    # Nothing was lost: the upload is still there, and the retry makes the analysis.
    created = await client.post(f"{API}/analyses", headers=headers, json=body)
    assert created.status_code == 202, created.text
    assert len(enqueued) == 1


async def test_an_upload_through_s3_is_sanitised_and_its_original_deleted(
    app: FastAPI,
    s3_client: tuple[AsyncClient, S3Storage],
    headers: dict[str, str],
    enqueued: list[uuid.UUID],
) -> None:
    client, storage = s3_client
    issued = await ticket(client, headers, content_type="image/png")
    assert await post_to_bucket(issued, gps_png()) == 204
    assert incoming_objects(storage) == [issued["fields"]["key"]]

    created = await client.post(
        f"{API}/analyses", headers=headers, json={"upload_id": issued["upload_id"]}
    )

    assert created.status_code == 202, created.text
    stored = Image.open(io.BytesIO(storage.get((await row_of(app, created)).image_key)))
    assert (stored.format, stored.size) == ("JPEG", (1024, 512))
    assert not stored.getexif() and "exif" not in stored.info
    assert incoming_objects(storage) == []  # the original, GPS and all, is gone
    assert len(enqueued) == 1


@pytest.mark.parametrize(
    ("data", "status", "title"),
    [
        (b"<html>not an image</html>", 415, "Unsupported image type"),
        (b"\xff\xd8\xff" + b"\0" * 1000, 422, "Corrupt image"),
        (png_header_only(10_000, 10_000), 422, "Image has too many pixels"),
    ],
    ids=["not-an-image", "truncated-jpeg", "100-megapixels"],
)
async def test_an_upload_through_s3_is_judged_like_any_upload(
    s3_client: tuple[AsyncClient, S3Storage],
    headers: dict[str, str],
    enqueued: list[uuid.UUID],
    data: bytes,
    status: int,
    title: str,
) -> None:
    client, storage = s3_client
    issued = await ticket(client, headers)
    assert await post_to_bucket(issued, data) == 204
    refused = await client.post(
        f"{API}/analyses", headers=headers, json={"upload_id": issued["upload_id"]}
    )
    assert (refused.status_code, refused.json()["title"]) == (status, title), refused.text
    assert refused.headers["content-type"] == "application/problem+json"
    assert enqueued == []
    assert incoming_objects(storage) == []


async def test_s3_refusing_access_is_a_500_that_names_no_bucket_and_keeps_the_upload(
    s3_client: tuple[AsyncClient, S3Storage], headers: dict[str, str], enqueued: list[uuid.UUID]
) -> None:
    """Access denied is the bucket's or the role's configuration: no retry mends it, so it is
    not the 503 of an S3 down or busy, but it tells the client no more than that."""
    client, storage = s3_client
    issued = await ticket(client, headers)
    assert await post_to_bucket(issued, gps_png()) == 204
    body = {"upload_id": issued["upload_id"]}
    with Stubber(storage._client) as s3:
        s3.add_client_error(
            "head_object",
            service_error_code="AccessDenied",
            service_message=f"arn:aws:s3:::{storage.bucket}/{issued['fields']['key']}",
            http_status_code=403,
        )
        refused = await client.post(f"{API}/analyses", headers=headers, json=body)
    assert refused.status_code == 500
    assert refused.headers["content-type"] == "application/problem+json"
    assert storage.bucket not in refused.text and "arn:" not in refused.text
    assert incoming_objects(storage) == [issued["fields"]["key"]]
    assert (await client.post(f"{API}/analyses", headers=headers, json=body)).status_code == 202
