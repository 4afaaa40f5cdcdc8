"""`user.deleted` travels on its Redis stream and takes the person's analyses and photos."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from moto import mock_aws

from ecosort_common.events import Event
from ecosort_common.outbox import stream_name
from ecosort_common.testing import TokenIssuer
from ecosort_waste import crud
from ecosort_waste.config import Settings
from ecosort_waste.consumers import UserDeletedHandler
from ecosort_waste.storage import S3Storage, image_key, incoming_key, storage_from_settings

from .conftest import stored_images
from .test_api_analyses import (
    API,
    User,
    assert_problem,
    complete,
    count_owned,
    jpeg,
    row,
    upload,
    waiting_for_an_advisory_lock,
)
from .test_api_uploads import REGION, gps_png, post_form, ticket


def user_deleted(user_id: uuid.UUID) -> dict[str, str]:
    return {
        "id": str(uuid.uuid4()),
        "type": "user.deleted",
        "source": "users",
        "occurred_at": "2026-11-27T00:00:00+00:00",
        "payload": json.dumps({"user_id": str(user_id)}),
    }


@pytest.mark.usefixtures("enqueued")
async def test_user_deleted_removes_their_analyses_and_photos_only(
    app: FastAPI, client: AsyncClient, token_issuer: TokenIssuer, settings: Settings
) -> None:
    leaving, staying = User(token_issuer), User(token_issuer)
    mine = [(await upload(client, leaving, jpeg(seed))).json()["id"] for seed in (1, 2)]
    theirs = (await upload(client, staying, jpeg(3))).json()["id"]
    photos = [Path(settings.data_dir) / "uploads" / (await row(app, i)).image_key for i in mine]
    # A photo stored by a request that failed before its row was written: no analysis names it.
    app.state.storage.put(image_key(leaving.id, "0" * 64), jpeg(4), "image/jpeg")
    photos.append(Path(settings.data_dir) / "uploads" / image_key(leaving.id, "0" * 64))
    theirs_photo = Path(settings.data_dir) / "uploads" / (await row(app, theirs)).image_key
    assert all(photo.exists() for photo in [*photos, theirs_photo])
    await complete(app, mine[0], {"category": "plastic", "confidence": 0.7, "candidates": []})
    corrected = await client.post(
        f"{API}/analyses/{mine[0]}/feedback", headers=leaving.headers, json={"category": "can"}
    )
    assert corrected.status_code == 201, corrected.text

    await app.state.redis.xadd(stream_name("user.deleted"), user_deleted(leaving.id))

    for _ in range(100):  # the app's own consumer picks it up
        listed = await client.get(f"{API}/analyses", headers=leaving.headers)
        if not listed.json()["items"]:
            break
        await asyncio.sleep(0.1)
    assert listed.json()["items"] == []
    assert not any(photo.exists() for photo in photos)
    kept = await client.get(f"{API}/analyses/{theirs}", headers=staying.headers)
    assert kept.status_code == 200
    assert theirs_photo.exists()


async def test_user_deleted_removes_their_unread_direct_uploads(
    app: FastAPI, client: AsyncClient, token_issuer: TokenIssuer, settings: Settings
) -> None:
    # Uploaded but never turned into an analysis: originals, GPS and all.
    leaving, staying = User(token_issuer), User(token_issuer)
    uploads = Path(settings.data_dir) / "uploads"
    originals: dict[uuid.UUID, list[Path]] = {}
    for who in (leaving, leaving, staying):
        issued = await ticket(client, who.headers)
        assert (await post_form(client, issued, gps_png())).status_code == 204
        originals.setdefault(who.id, []).append(uploads / issued["fields"]["key"])
    assert all(path.exists() for paths in originals.values() for path in paths)

    await app.state.redis.xadd(stream_name("user.deleted"), user_deleted(leaving.id))

    for _ in range(100):  # the app's own consumer picks it up
        if not any(path.exists() for path in originals[leaving.id]):
            break
        await asyncio.sleep(0.1)
    assert not (uploads / "incoming" / str(leaving.id)).exists()
    assert all(path.exists() for path in originals[staying.id])


async def test_user_deleted_takes_their_photos_and_uploads_from_s3_too(app: FastAPI) -> None:
    """The same handler, on a bucket (moto stands in for S3), as the app builds it from
    STORAGE_BACKEND=s3: the person's objects go, under the prefix, and nobody else's."""
    leaving, staying = uuid.uuid4(), uuid.uuid4()
    with mock_aws():
        storage = storage_from_settings(
            Settings(
                storage_backend="s3", s3_bucket="ecosort-del", s3_prefix="waste", s3_region=REGION
            )
        )
        assert isinstance(storage, S3Storage)
        client = storage._client
        client.create_bucket(
            Bucket="ecosort-del", CreateBucketConfiguration={"LocationConstraint": REGION}
        )
        keys = {
            owner: [image_key(owner, "0" * 64), incoming_key(owner, uuid.uuid4())]
            for owner in (leaving, staying)
        }
        for photo, original in keys.values():
            storage.put(photo, b"photo", "image/jpeg")
            storage.put(original, b"original, GPS and all", "image/png")
        event = Event(**{**user_deleted(leaving), "payload": {"user_id": str(leaving)}})

        async with app.state.sessionmaker() as session, session.begin():
            await UserDeletedHandler(storage)(session, event)

        listed = client.list_objects_v2(Bucket="ecosort-del")["Contents"]
        assert sorted(item["Key"] for item in listed) == [f"waste/{k}" for k in keys[staying]]


@pytest.mark.usefixtures("enqueued")
@pytest.mark.parametrize("key", [None, "after-deletion"])
async def test_a_deleted_accounts_token_creates_nothing(
    app: FastAPI, client: AsyncClient, token_issuer: TokenIssuer, key: str | None
) -> None:
    """Auth revokes the person's sessions on its own copy of `user.deleted`: until it has, their
    token still passes. Nothing it creates could be removed by a later event."""
    leaving = User(token_issuer)
    await app.state.redis.xadd(stream_name("user.deleted"), user_deleted(leaving.id))
    for _ in range(100):
        async with app.state.sessionmaker() as session:
            if await crud.is_deleted(session, leaving.id):
                break
        await asyncio.sleep(0.1)

    refused = await upload(client, leaving, jpeg(5), key=key)

    assert_problem(refused, 410)
    assert await count_owned(app, leaving.id) == 0
    assert stored_images(app, leaving.id) == set()


@pytest.mark.usefixtures("enqueued")
async def test_an_upload_during_the_deletion_waits_for_it_and_is_refused(
    app: FastAPI, client: AsyncClient, token_issuer: TokenIssuer
) -> None:
    leaving = User(token_issuer)
    async with app.state.sessionmaker() as deletion:
        await crud.delete_account(deletion, leaving.id)  # holds the account until it commits
        uploading = asyncio.create_task(upload(client, leaving, jpeg(6)))
        await waiting_for_an_advisory_lock(app)  # a row inserted now would escape the DELETE
        assert not uploading.done()
        await deletion.commit()

    assert_problem(await uploading, 410)
    assert await count_owned(app, leaving.id) == 0
    assert stored_images(app, leaving.id) == set()


@pytest.mark.usefixtures("enqueued")
async def test_a_direct_upload_of_a_deleted_account_is_refused_and_its_original_deleted(
    app: FastAPI, client: AsyncClient, token_issuer: TokenIssuer, settings: Settings
) -> None:
    leaving = User(token_issuer)
    issued = await ticket(client, leaving.headers)
    assert (await post_form(client, issued, gps_png())).status_code == 204
    original = Path(settings.data_dir) / "uploads" / issued["fields"]["key"]
    async with app.state.sessionmaker() as session, session.begin():
        await crud.delete_account(session, leaving.id)  # the rows, as the consumer does
    assert original.exists()
    # No new form either: nothing could be made from it.
    assert_problem(await client.post(f"{API}/uploads", headers=leaving.headers), 410)

    refused = await client.post(
        f"{API}/analyses", headers=leaving.headers, json={"upload_id": issued["upload_id"]}
    )

    assert_problem(refused, 410)
    assert not original.exists()  # GPS and all
    assert stored_images(app, leaving.id) == set()
