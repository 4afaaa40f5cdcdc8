"""Storage backends: a local directory, and S3 (moto stands in for AWS; boto3 is the client)."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError, ReadTimeoutError
from botocore.stub import Stubber
from moto import mock_aws

from ecosort_common.testing import silent_server
from ecosort_waste.config import Settings
from ecosort_waste.storage import (
    InvalidKey,
    LocalStorage,
    ObjectNotFound,
    S3Storage,
    Storage,
    StorageUnavailable,
    UploadFormRejected,
    storage_from_settings,
)

BUCKET = "ecosort-test-images"


@pytest.fixture
def local(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path, upload_url="http://api/upload", signing_key=b"k" * 32)


@pytest.fixture
def s3() -> Iterator[S3Storage]:
    with mock_aws():
        client = boto3.client("s3", region_name="ap-northeast-2")
        client.create_bucket(
            Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "ap-northeast-2"}
        )
        yield S3Storage(client, BUCKET, prefix="waste")


@pytest.fixture(params=["local", "s3"])
def storage(request: pytest.FixtureRequest) -> Storage:
    backend: Storage = request.getfixturevalue(request.param)
    return backend


def test_round_trip_size_and_delete(storage: Storage) -> None:
    storage.put("images/a/b.jpg", b"jpeg-bytes", "image/jpeg")
    assert storage.get("images/a/b.jpg") == b"jpeg-bytes"
    assert storage.size("images/a/b.jpg") == len(b"jpeg-bytes")
    storage.put("images/a/b.jpg", b"new", "image/jpeg")
    assert storage.get("images/a/b.jpg") == b"new"
    storage.delete("images/a/b.jpg")
    with pytest.raises(ObjectNotFound):
        storage.get("images/a/b.jpg")
    with pytest.raises(ObjectNotFound):
        storage.size("images/a/b.jpg")
    storage.delete("images/a/b.jpg")  # deleting twice is fine


def test_delete_prefix_takes_the_folder_and_nothing_beside_it(storage: Storage) -> None:
    for key in ("incoming/u1/a", "incoming/u1/b", "incoming/u1/deeper/c"):
        storage.put(key, b"original", "image/jpeg")
    for key in ("incoming/u10/a", "incoming/u1x", "images/u1/a.jpg"):
        storage.put(key, b"keep", "image/jpeg")
    assert storage.delete_prefix("incoming/u1/") == 3
    for key in ("incoming/u1/a", "incoming/u1/b", "incoming/u1/deeper/c"):
        with pytest.raises(ObjectNotFound):
            storage.get(key)
    for key in ("incoming/u10/a", "incoming/u1x", "images/u1/a.jpg"):
        assert storage.get(key) == b"keep"
    assert storage.delete_prefix("incoming/u1/") == 0  # again, or never used: not an error


def test_delete_prefix_older_than_takes_only_what_was_written_before(storage: Storage) -> None:
    storage.put("incoming/u1/a", b"original", "image/jpeg")
    storage.put("images/u1/a.jpg", b"keep", "image/jpeg")
    now = datetime.now(UTC)
    assert storage.delete_prefix("incoming/", older_than=now - timedelta(hours=1)) == 0
    assert storage.get("incoming/u1/a") == b"original"
    assert storage.delete_prefix("incoming/", older_than=now + timedelta(hours=1)) == 1
    with pytest.raises(ObjectNotFound):
        storage.get("incoming/u1/a")
    assert storage.get("images/u1/a.jpg") == b"keep"


def test_a_file_gone_since_the_listing_does_not_stop_the_sweep(
    local: LocalStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An upload's temporary file renamed into place while the reaper sweeps `incoming/`."""
    local.put("incoming/u1/a", b"old", "image/jpeg")
    listed = Path.rglob
    monkeypatch.setattr(
        Path,
        "rglob",
        lambda folder, pattern: [*listed(folder, pattern), folder / "u1" / ".tmp-renamed"],
    )
    assert local.delete_prefix("incoming/", older_than=datetime.now(UTC) + timedelta(hours=1)) == 1
    with pytest.raises(ObjectNotFound):
        local.get("incoming/u1/a")


def test_delete_prefix_pages_through_s3(s3: S3Storage) -> None:
    # Over one ListObjectsV2 page (and one DeleteObjects call) of 1000 keys.
    for number in range(1005):
        s3.put(f"incoming/u/{number}", b"x", "image/jpeg")
    assert s3.delete_prefix("incoming/u/") == 1005
    assert s3._client.list_objects_v2(Bucket=BUCKET, Prefix="waste/")["KeyCount"] == 0


@pytest.mark.parametrize("prefix", ["incoming/u1", "../", "/", "", "incoming//"])
def test_delete_prefix_names_a_folder(storage: Storage, prefix: str) -> None:
    with pytest.raises(InvalidKey):
        storage.delete_prefix(prefix)


@pytest.mark.parametrize("key", ["../etc/passwd", "/abs", "a//b", "a/./b", "", "a\\b"])
def test_keys_cannot_escape(storage: Storage, key: str) -> None:
    with pytest.raises(InvalidKey):
        storage.put(key, b"x", "image/jpeg")


def test_local_files_land_under_the_root(local: LocalStorage, tmp_path: Path) -> None:
    local.put("images/x.jpg", b"abc", "image/jpeg")
    assert (tmp_path / "images" / "x.jpg").read_bytes() == b"abc"
    assert not [p for p in tmp_path.rglob(".tmp-*")]


def test_local_presigned_form_is_signed_and_expires(local: LocalStorage) -> None:
    url, fields = local.presign_upload("incoming/u/1", "image/jpeg", 1000)
    assert url == "http://api/upload"
    assert local.verify_upload_form(fields) == "incoming/u/1"
    for tampered in ({**fields, "key": "incoming/other/1"}, {**fields, "max_bytes": "99999999"}):
        with pytest.raises(UploadFormRejected):
            local.verify_upload_form(tampered)
    with pytest.raises(UploadFormRejected):
        local.verify_upload_form({k: v for k, v in fields.items() if k != "signature"})
    with pytest.raises(UploadFormRejected):
        local.verify_upload_form(fields, now=int(fields["expires"]) + 1)


def test_s3_objects_carry_prefix_and_content_type(s3: S3Storage) -> None:
    s3.put("images/p.jpg", b"data", "image/jpeg")
    head = s3._client.head_object(Bucket=BUCKET, Key="waste/images/p.jpg")
    assert head["ContentType"] == "image/jpeg"


def test_s3_presigned_post_policy(s3: S3Storage) -> None:
    url, fields = s3.presign_upload("incoming/u/1", "image/jpeg", 10 * 1024 * 1024)
    assert BUCKET in url
    assert fields["key"] == "waste/incoming/u/1"
    assert fields["Content-Type"] == "image/jpeg"
    # The policy S3 enforces (moto does not: it stores whatever is posted) carries the size
    # limit, the content type, this one key (not a prefix) and an expiry minutes away.
    policy = json.loads(base64.b64decode(fields["policy"]))
    conditions = policy["conditions"]
    assert ["content-length-range", 1, 10 * 1024 * 1024] in conditions
    assert {"Content-Type": "image/jpeg"} in conditions
    assert {"key": "waste/incoming/u/1"} in conditions
    assert {"bucket": BUCKET} in conditions
    expires = datetime.strptime(policy["expiration"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert timedelta(0) < expires - datetime.now(UTC) <= timedelta(seconds=900)


def test_upload_forms_name_the_public_endpoint_and_nothing_else_does() -> None:
    """On kind the API reaches MinIO by its in-cluster name, which a phone cannot resolve: the
    form it is given must name an endpoint it reaches. The API's own calls stay in-cluster."""
    internal = "http://minio.ecosort-data.svc.cluster.local:9000"
    public = "http://192.168.0.10:9000"
    settings = Settings(
        storage_backend="s3",
        s3_bucket=BUCKET,
        s3_endpoint_url=internal,
        s3_public_endpoint_url=public,
        s3_region="ap-northeast-2",
        s3_access_key_id="test-key",
        s3_secret_access_key="test-secret",
        upload_expires_seconds=300,
    )
    storage = storage_from_settings(settings)
    assert isinstance(storage, S3Storage)
    url, fields = storage.presign_upload("incoming/u/1", "image/png", 1000)
    assert url == f"{public}/{BUCKET}"
    assert fields["key"] == "incoming/u/1"
    assert fields["x-amz-credential"].startswith("test-key/")  # signed as the API
    policy = json.loads(base64.b64decode(fields["policy"]))
    expires = datetime.strptime(policy["expiration"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert expires - datetime.now(UTC) <= timedelta(seconds=300)
    assert storage._client.meta.endpoint_url == internal

    unset = storage_from_settings(settings.model_copy(update={"s3_public_endpoint_url": ""}))
    assert unset.presign_upload("incoming/u/1", "image/png", 1000)[0] == f"{internal}/{BUCKET}"


def test_s3_presigned_post_accepts_an_upload(s3: S3Storage) -> None:
    # moto also intercepts `requests`, so the client's direct upload can be replayed end to end.
    import requests

    url, fields = s3.presign_upload("incoming/u/2", "image/jpeg", 1000)
    response = requests.post(url, data=fields, files={"file": ("x.jpg", b"abc")}, timeout=5)
    assert response.status_code == 204
    assert s3.get("incoming/u/2") == b"abc"


def test_s3_failures_are_told_apart(s3: S3Storage) -> None:
    """Busy or failing (worth a retry: the API answers 503) is not a missing object, nor a
    misconfiguration such as access denied (a 500, for the operator)."""
    for code, status in (("SlowDown", 503), ("InternalError", 500), ("ServiceUnavailable", 503)):
        with Stubber(s3._client) as stub:
            stub.add_client_error("get_object", code, http_status_code=status)
            with pytest.raises(StorageUnavailable):
                s3.get("images/a.jpg")
    with Stubber(s3._client) as stub:
        stub.add_client_error("head_object", "AccessDenied", http_status_code=403)
        with pytest.raises(ClientError):
            s3.size("images/a.jpg")
    with pytest.raises(ObjectNotFound):
        s3.size("images/a.jpg")


def test_a_hung_s3_gives_up_in_seconds_not_minutes() -> None:
    """The storage write of an upload runs in a thread the request deadline cannot stop; with
    boto3's defaults (60 s per read, four retries) a hung S3 held it for minutes."""
    with silent_server() as address:
        settings = Settings(
            storage_backend="s3",
            s3_endpoint_url=f"http://{address}",
            s3_region="ap-northeast-2",
            s3_access_key_id="test",
            s3_secret_access_key="test",
            s3_timeout_seconds=0.3,
        )
        storage = storage_from_settings(settings)
        started = time.monotonic()
        with pytest.raises(StorageUnavailable) as raised:
            storage.put("photos/a.jpg", b"x", "image/jpeg")
        waited = time.monotonic() - started
    assert isinstance(raised.value.__cause__, ReadTimeoutError)
    # Three attempts of 0.3 s and the standard retry mode's backoff between them (jittered,
    # up to 2 s then 4 s).
    assert waited < 8, waited
