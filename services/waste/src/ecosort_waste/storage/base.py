"""The storage interface the API and the pipeline share.

Methods are synchronous on purpose: the Celery pipeline calls them directly, and the async API
calls them in a worker thread (``starlette.concurrency.run_in_threadpool``).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Protocol, runtime_checkable


class ObjectNotFound(KeyError):
    """No object is stored under the key."""


class StorageUnavailable(Exception):
    """The object store is down, throttling or not answering: the request was fine, and the
    same call may succeed in a moment (the API answers 503 with Retry-After)."""


class InvalidKey(ValueError):
    """A key that could escape the storage root or is otherwise malformed."""


@runtime_checkable
class Storage(Protocol):
    def put(self, key: str, data: bytes, content_type: str) -> None:
        """Store ``data`` under ``key``, replacing what was there."""

    def get(self, key: str) -> bytes:
        """The bytes under ``key``; raises ``ObjectNotFound``."""

    def size(self, key: str) -> int:
        """The size in bytes of the object under ``key``; raises ``ObjectNotFound``."""

    def delete(self, key: str) -> None:
        """Remove ``key``; a missing key is not an error."""

    def delete_prefix(self, prefix: str, older_than: datetime | None = None) -> int:
        """Remove every object under ``prefix``, a folder (``a/b/``), or only those last
        written before ``older_than``; returns how many went."""

    def presign_upload(
        self, key: str, content_type: str, max_bytes: int
    ) -> tuple[str, dict[str, str]]:
        """A URL and form fields a client POSTs (multipart, file field last) to upload ``key``."""


def check_prefix(prefix: str) -> str:
    """A prefix names a whole folder: a key plus a trailing slash, so `incoming/u1/` can never
    also take `incoming/u10/...`."""
    if not prefix.endswith("/"):
        raise InvalidKey(f"a prefix ends with '/': {prefix!r}")
    check_key(prefix[:-1])
    return prefix


def check_key(key: str) -> str:
    """Keys are relative, slash-separated, and never walk upwards."""
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\\" in key:
        raise InvalidKey(f"invalid storage key: {key!r}")
    return key


# Direct uploads land here: originals, GPS and all, until an analysis reads them.
INCOMING = "incoming/"


def incoming_prefix(owner_id: uuid.UUID) -> str:
    """The folder of someone's direct uploads."""
    return f"{INCOMING}{owner_id}/"


def incoming_key(owner_id: uuid.UUID, upload_id: uuid.UUID) -> str:
    """Where a direct upload lands. The owner is part of the key, so an upload id is useless
    to anyone but the person it was issued to."""
    return f"{incoming_prefix(owner_id)}{upload_id}"


def image_prefix(owner_id: uuid.UUID) -> str:
    """The folder of someone's sanitised photos, the ones analyses read."""
    return f"images/{owner_id}/"


def image_key(owner_id: uuid.UUID, sha256: str) -> str:
    # Content-addressed: duplicate requests write the same object instead of leaving orphans.
    return f"{image_prefix(owner_id)}{sha256}.jpg"
