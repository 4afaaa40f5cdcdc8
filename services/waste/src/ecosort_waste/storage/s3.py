"""Storage in an S3 bucket through boto3, including presigned POST for direct uploads."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from botocore.exceptions import ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as S3ConnectionError

from ecosort_waste.storage.base import (
    ObjectNotFound,
    StorageUnavailable,
    check_key,
    check_prefix,
)

_MISSING_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
# S3 answering that it is busy; any 5xx is S3 failing. Both are worth a retry, as the boto3
# retries already were. Access denied, no such bucket and the like are configuration: not these.
_BUSY_CODES = frozenset({"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout"})


class S3Storage:
    def __init__(
        self,
        client: Any,
        bucket: str,
        *,
        prefix: str = "",
        expires_in: int = 900,
        presigner: Any | None = None,
    ):
        self._client = client
        # Upload forms name the presigner's endpoint: the one clients reach, which the client's
        # (in-cluster) endpoint may not be.
        self._presigner = presigner or client
        self.bucket = bucket
        self._prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self._expires_in = expires_in

    def _key(self, key: str) -> str:
        return self._prefix + check_key(key)

    def put(self, key: str, data: bytes, content_type: str) -> None:
        with _answered(key):
            self._client.put_object(
                Bucket=self.bucket, Key=self._key(key), Body=data, ContentType=content_type
            )

    def get(self, key: str) -> bytes:
        with _answered(key, missing=True):
            response = self._client.get_object(Bucket=self.bucket, Key=self._key(key))
            body: bytes = response["Body"].read()
        return body

    def size(self, key: str) -> int:
        with _answered(key, missing=True):
            response = self._client.head_object(Bucket=self.bucket, Key=self._key(key))
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
        presigned = self._presigner.generate_presigned_post(
            Bucket=self.bucket,
            Key=self._key(key),
            Fields={"Content-Type": content_type},
            Conditions=[{"Content-Type": content_type}, ["content-length-range", 1, max_bytes]],
            ExpiresIn=self._expires_in,
        )
        return presigned["url"], dict(presigned["fields"])


@contextmanager
def _answered(key: str, *, missing: bool = False) -> Iterator[None]:
    """S3's failures in the storage interface's terms: a missing object (``missing``: reads),
    or S3 down, busy or not answering in time, after boto3's own retries. Anything else, such
    as access denied or no such bucket, stays as boto3 raised it."""
    try:
        yield
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        if missing and code in _MISSING_CODES:
            raise ObjectNotFound(key) from exc
        if status >= 500 or code in _BUSY_CODES:
            raise StorageUnavailable(f"S3 answered {code or status} for {key!r}") from exc
        raise
    except (S3ConnectionError, HTTPClientError) as exc:  # refused, reset, timed out
        raise StorageUnavailable(f"S3 did not answer for {key!r}: {exc}") from exc
