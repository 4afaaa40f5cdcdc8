"""Storage in an S3 bucket through boto3, including presigned POST for direct uploads."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from botocore.exceptions import ClientError

from ecosort_waste.storage.base import ObjectNotFound, check_key, check_prefix

_MISSING_CODES = frozenset({"NoSuchKey", "404", "NotFound"})


class S3Storage:
    def __init__(self, client: Any, bucket: str, *, prefix: str = "", expires_in: int = 900):
        self._client = client
        self.bucket = bucket
        self._prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self._expires_in = expires_in

    def _key(self, key: str) -> str:
        return self._prefix + check_key(key)

    def put(self, key: str, data: bytes, content_type: str) -> None:
        self._client.put_object(
            Bucket=self.bucket, Key=self._key(key), Body=data, ContentType=content_type
        )

    def get(self, key: str) -> bytes:
        try:
            response = self._client.get_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            raise _translate(exc, key) from exc
        body: bytes = response["Body"].read()
        return body

    def size(self, key: str) -> int:
        try:
            response = self._client.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            raise _translate(exc, key) from exc
        return int(response["ContentLength"])

    def delete(self, key: str) -> None:
        self._client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def delete_prefix(self, prefix: str, older_than: datetime | None = None) -> int:
        deleted = 0
        pages = self._client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self._prefix + check_prefix(prefix)
        )
        for page in pages:
            # A page holds at most 1000 keys, which is also what one DeleteObjects takes.
            keys = [
                {"Key": item["Key"]}
                for item in page.get("Contents", [])
                if older_than is None or item["LastModified"] < older_than
            ]
            if not keys:
                continue
            response = self._client.delete_objects(
                Bucket=self.bucket, Delete={"Objects": keys, "Quiet": True}
            )
            if response.get("Errors"):
                # DeleteObjects answers 200 even when some keys failed: the caller must retry.
                error = response["Errors"][0]
                raise RuntimeError(
                    f"S3 kept {len(response['Errors'])} object(s) under {prefix!r}: "
                    f"{error.get('Code')} {error.get('Message')}"
                )
            deleted += len(keys)
        return deleted

    def presign_upload(
        self, key: str, content_type: str, max_bytes: int
    ) -> tuple[str, dict[str, str]]:
        # S3 itself enforces these conditions when the client POSTs: the bytes never reach us.
        presigned = self._client.generate_presigned_post(
            Bucket=self.bucket,
            Key=self._key(key),
            Fields={"Content-Type": content_type},
            Conditions=[{"Content-Type": content_type}, ["content-length-range", 1, max_bytes]],
            ExpiresIn=self._expires_in,
        )
        return presigned["url"], dict(presigned["fields"])


def _translate(exc: ClientError, key: str) -> Exception:
    code = str(exc.response.get("Error", {}).get("Code", ""))
    return ObjectNotFound(key) if code in _MISSING_CODES else exc
