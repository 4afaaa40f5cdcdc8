"""`user.deleted` travels on its Redis stream and takes the person's analyses and photos."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

from fastapi import FastAPI
from httpx import AsyncClient

from ecosort_common.outbox import stream_name
from ecosort_common.testing import TokenIssuer
from ecosort_waste.config import Settings

from .test_api_analyses import API, User, jpeg, row, upload


async def test_user_deleted_removes_their_analyses_and_photos_only(
    app: FastAPI, client: AsyncClient, token_issuer: TokenIssuer, settings: Settings
) -> None:
    app.state.enqueue_analysis = lambda analysis_id: None
    leaving, staying = User(token_issuer), User(token_issuer)
    mine = [(await upload(client, leaving, jpeg(seed))).json()["id"] for seed in (1, 2)]
    theirs = (await upload(client, staying, jpeg(3))).json()["id"]
    photos = [Path(settings.data_dir) / "uploads" / (await row(app, i)).image_key for i in mine]
    assert all(photo.exists() for photo in photos)
    await client.post(
        f"{API}/analyses/{mine[0]}/feedback", headers=leaving.headers, json={"category": "can"}
    )

    event = {
        "id": str(uuid.uuid4()),
        "type": "user.deleted",
        "source": "users",
        "occurred_at": "2026-11-27T00:00:00+00:00",
        "payload": json.dumps({"user_id": str(leaving.id)}),
    }
    await app.state.redis.xadd(stream_name("user.deleted"), event)

    for _ in range(100):  # the app's own consumer picks it up
        listed = await client.get(f"{API}/analyses", headers=leaving.headers)
        if not listed.json()["items"]:
            break
        await asyncio.sleep(0.1)
    assert listed.json()["items"] == []
    assert not any(photo.exists() for photo in photos)
    kept = await client.get(f"{API}/analyses/{theirs}", headers=staying.headers)
    assert kept.status_code == 200
