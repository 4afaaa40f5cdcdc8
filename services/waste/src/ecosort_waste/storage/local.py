"""Storage in a local directory (the default), with signed direct-upload forms.

A presigned upload here mimics S3's presigned POST: the form fields carry the key, the content
type, a byte limit and an expiry, signed with HMAC-SHA256. The API's own direct-upload route
checks the signature (``verify_upload_form``) before it writes anything.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import tempfile
import time
from contextlib import suppress
from datetime import datetime
from pathlib import Path

from ecosort_waste.storage.base import InvalidKey, ObjectNotFound, check_key, check_prefix

UPLOAD_FORM_FIELDS = ("key", "Content-Type", "max_bytes", "expires")


class UploadFormRejected(ValueError):
    """A direct-upload form that is unsigned, tampered with or expired."""


class LocalStorage:
    def __init__(
        self, root: Path, *, upload_url: str, signing_key: bytes, expires_in: int = 900
    ) -> None:
        self.root = root
        self.upload_url = upload_url
        self._signing_key = signing_key
        self._expires_in = expires_in

    def _path(self, key: str) -> Path:
        path = (self.root / check_key(key)).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise InvalidKey(f"invalid storage key: {key!r}")
        return path

    def put(self, key: str, data: bytes, content_type: str) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write then rename, so a reader never sees half a file and concurrent writers don't mix.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError) as exc:
            raise ObjectNotFound(key) from exc

    def size(self, key: str) -> int:
        try:
            return self._path(key).stat().st_size
        except FileNotFoundError as exc:
            raise ObjectNotFound(key) from exc

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def delete_prefix(self, prefix: str, older_than: datetime | None = None) -> int:
        folder = self._path(check_prefix(prefix)[:-1])
        cutoff = older_than.timestamp() if older_than is not None else None
        deleted = 0
        # Deepest first, so each folder is empty by the time it is removed. A folder something
        # was just written into, or still holds a newer file, stays (rmdir refuses).
        for path in sorted(folder.rglob("*"), reverse=True):
            if path.is_dir():
                with suppress(OSError):
                    path.rmdir()
            elif cutoff is None or _written_before(path, cutoff):
                path.unlink(missing_ok=True)
                deleted += 1
        with suppress(OSError):
            folder.rmdir()
        return deleted

    def presign_upload(
        self, key: str, content_type: str, max_bytes: int
    ) -> tuple[str, dict[str, str]]:
        fields = {
            "key": check_key(key),
            "Content-Type": content_type,
            "max_bytes": str(max_bytes),
            "expires": str(int(time.time()) + self._expires_in),
        }
        fields["signature"] = self._sign(fields)
        return self.upload_url, fields

    def verify_upload_form(self, form: dict[str, str], *, now: float | None = None) -> str:
        """Check a direct-upload form's signature and expiry; returns the key it may write."""
        try:
            signed = {name: form[name] for name in UPLOAD_FORM_FIELDS}
            signature = form["signature"]
            expires = int(signed["expires"])
            int(signed["max_bytes"])
        except (KeyError, ValueError) as exc:
            raise UploadFormRejected("incomplete upload form") from exc
        # As bytes: compare_digest raises TypeError for str holding non-ASCII characters, and
        # the signature is whatever the unauthenticated sender wrote.
        if not hmac.compare_digest(signature.encode(), self._sign(signed).encode()):
            raise UploadFormRejected("bad upload signature")
        if expires < (time.time() if now is None else now):
            raise UploadFormRejected("upload form expired")
        return signed["key"]

    def _sign(self, fields: dict[str, str]) -> str:
        message = "\n".join(f"{name}={fields[name]}" for name in UPLOAD_FORM_FIELDS).encode()
        return hmac.new(self._signing_key, message, hashlib.sha256).hexdigest()


def _written_before(path: Path, cutoff: float) -> bool:
    try:
        return path.stat().st_mtime < cutoff
    except FileNotFoundError:  # renamed into place or deleted since the listing
        return False
