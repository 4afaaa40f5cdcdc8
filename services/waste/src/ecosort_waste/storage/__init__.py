"""Object storage for uploaded and sanitised images: a local directory or S3."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from ecosort_waste.storage.base import (
    INCOMING,
    InvalidKey,
    ObjectNotFound,
    Storage,
    StorageUnavailable,
    check_key,
    image_key,
    image_prefix,
    incoming_key,
    incoming_prefix,
)
from ecosort_waste.storage.local import LocalStorage, UploadFormRejected
from ecosort_waste.storage.s3 import S3Storage

__all__ = [
    "INCOMING",
    "InvalidKey",
    "LocalStorage",
    "ObjectNotFound",
    "S3Storage",
    "Storage",
    "StorageUnavailable",
    "UploadFormRejected",
    "check_key",
    "image_key",
    "image_prefix",
    "incoming_key",
    "incoming_prefix",
    "storage_from_settings",
]


def storage_from_settings(settings: Any) -> Storage:
    """The backend ``STORAGE_BACKEND`` names (``local`` or ``s3``), configured from settings."""
    if settings.storage_backend == "s3":
        # Here, not at the top: a local deployment need not load botocore (~25 MB).
        import boto3
        from botocore.config import Config

        # One session: both clients share its credentials and their refreshes.
        session = boto3.Session(
            aws_access_key_id=settings.s3_access_key_id or None,
            aws_secret_access_key=settings.s3_secret_access_key or None,
            region_name=settings.s3_region or None,
        )
        config = Config(
            connect_timeout=settings.s3_timeout_seconds,
            read_timeout=settings.s3_timeout_seconds,
            retries={"mode": "standard", "max_attempts": 3},
        )
        client = session.client("s3", endpoint_url=settings.s3_endpoint_url or None, config=config)
        presigner = None
        if settings.s3_public_endpoint_url:
            presigner = session.client(
                "s3", endpoint_url=settings.s3_public_endpoint_url, config=config
            )
        return S3Storage(
            client,
            settings.s3_bucket,
            prefix=settings.s3_prefix,
            expires_in=settings.upload_expires_seconds,
            presigner=presigner,
        )
    return LocalStorage(
        Path(settings.data_dir) / "uploads",
        upload_url=settings.public_base_url.rstrip("/") + "/api/v1/waste/uploads/direct",
        signing_key=(
            settings.upload_signing_key.get_secret_value().encode()
            if settings.upload_signing_key is not None
            else secrets.token_bytes(32)
        ),
        expires_in=settings.upload_expires_seconds,
    )
