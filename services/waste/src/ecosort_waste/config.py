"""Settings of the waste service (environment variables; see the README's configuration table)."""

from functools import lru_cache
from typing import Literal

from pydantic import Field, SecretStr

from ecosort_common.settings import ServiceSettings


class Settings(ServiceSettings):
    service_name: str = "waste"

    # Storage of sanitised images: DATA_DIR/uploads locally, or an S3 bucket.
    data_dir: str = ".local/waste"
    storage_backend: Literal["local", "s3"] = "local"
    s3_bucket: str = "ecosort-waste"
    s3_prefix: str = ""
    s3_region: str = ""
    s3_endpoint_url: str = ""
    # The endpoint named in presigned upload forms, for clients outside the cluster when
    # S3_ENDPOINT_URL is an in-cluster name (MinIO on kind). Empty: S3_ENDPOINT_URL. Only
    # signing uses it (a POST form is signed over its policy, not the host): nothing is sent.
    s3_public_endpoint_url: str = ""
    s3_access_key_id: str = ""
    s3_secret_access_key: str = ""
    # Each attempt's connect and read timeout (boto3's default is 60 s, retried 4 times): an
    # upload's storage write runs in a thread that the request deadline cannot stop, and a hung
    # S3 would hold the thread pool for minutes.
    s3_timeout_seconds: float = Field(default=5.0, gt=0)
    # Direct uploads: how long a presigned form is valid; with local storage the form posts back
    # to this API at PUBLIC_BASE_URL and is signed with UPLOAD_SIGNING_KEY (set it in production).
    upload_expires_seconds: int = Field(default=900, gt=0)
    public_base_url: str = "http://127.0.0.1:8080"
    # Signs local direct-upload forms. Unset: a random key per process, which is enough for
    # one process; several processes behind one URL need the same key (a Secret).
    upload_signing_key: SecretStr | None = None

    # Server-Sent Events: a comment line this often keeps proxies from closing idle streams;
    # and a stream with no news re-checks the event log and database this often, in case a
    # pub/sub message was lost (pub/sub is at-most-once). Each stream's first frame carries
    # `retry:`, how long an EventSource waits before reconnecting (browsers default to ~3 s).
    sse_heartbeat_seconds: int = Field(default=15, gt=0)
    sse_resync_seconds: float = Field(default=30.0, gt=0)
    sse_retry_milliseconds: int = Field(default=2000, gt=0)

    # The pipeline's side (worker, guidance, classifier providers).
    recycling_url: str = "http://127.0.0.1:8104"
    classifier_provider: Literal["local", "openai", "roboflow"] = "local"
    analysis_deadline_seconds: int = Field(default=300, gt=0)
    # A `processing` analysis whose run holds no lease (its worker died: kill -9, OOM) is lost
    # once it has been processing this long, not only at the deadline. More than the lease
    # (pipeline.LEASE_SECONDS, checked by the worker): a claim writes the database, then its lease.
    analysis_lease_grace_seconds: float = Field(default=30.0, gt=0)
    # How often one analysis may be started (crashed workers, provider retries) before it fails.
    analysis_max_attempts: int = Field(default=3, gt=0)
    # Each worker's reaper passes this often: a lost run is re-queued up to this long after its
    # lease expired. A pass with nothing to do is two short transactions and a Redis round trip.
    # Under reaper.epoch_lapse_seconds() (7 s; the worker checks): each pass keeps the epoch.
    reaper_interval_seconds: float = Field(default=5.0, gt=0)
    # A queued analysis for which the broker holds no message this long is sent again: the API
    # died between its commit and the enqueue, or Redis refused the enqueue.
    requeue_unsent_after_seconds: float = Field(default=30.0, gt=0)
    # Celery on REDIS_URL, queue "analyses"; a key prefix keeps test runs and stacks apart. The
    # visibility timeout (redelivery of unacknowledged tasks) must exceed the longest task.
    celery_key_prefix: str = ""
    # Touched by the consumer every HEARTBEAT_INTERVAL_SECONDS; the pod's liveness probe reads
    # its age (a cheap check that cannot hang under load, unlike `celery inspect ping`).
    worker_heartbeat_file: str | None = None
    celery_visibility_timeout_seconds: int = Field(default=3600, gt=0)
    guidance_timeout_seconds: float = Field(default=2.0, gt=0)
    guidance_attempts: int = Field(default=3, gt=0)
    guidance_cache_seconds: float = Field(default=300.0, ge=0)
    guidance_down_cooldown_seconds: float = Field(default=5.0, ge=0)
    # Remote providers; a failing one falls back to the local model, and so does one that has
    # not answered, retries included, within the deadline (the person is waiting). The deadline
    # is the call's whole budget: no attempt or retry of it starts past it (CallBudget).
    remote_min_confidence: float = Field(default=0.5, ge=0, le=1)
    remote_classifier_deadline_seconds: float = Field(default=30.0, gt=0)
    openai_api_key: str = ""
    openai_model: str = "gpt-4o-mini"
    openai_base_url: str = ""
    openai_timeout_seconds: float = Field(default=20.0, gt=0)
    openai_max_retries: int = Field(default=2, ge=0)
    # The answer's token cap (reasoning tokens count too, on models that reason).
    openai_max_output_tokens: int = Field(default=400, gt=0)
    roboflow_api_key: str = ""
    roboflow_model_id: str = ""
    roboflow_base_url: str = "https://detect.roboflow.com"
    roboflow_class_map: dict[str, str] = Field(default_factory=dict)  # JSON; empty = built-in
    roboflow_timeout_seconds: float = Field(default=10.0, gt=0)
    # Local classifier: onnxruntime threads per worker process (one process per core), and
    # where `train-head` writes heads and the service reads the `current` one (empty: the
    # package's artifacts/heads; a folder of its own starts with the packaged current head).
    # The training photos come from WASTE_PHOTOS_DIR.
    classifier_threads: int = Field(default=1, gt=0)
    # Test-time augmentation (a flipped second view, half the throughput). None: follow the
    # head file, whose not-sure threshold was calibrated with or without it; true/false forces.
    classifier_test_time_augmentation: bool | None = None
    # The cascade (MODEL_CARD.md): Lite0's sure answers stand where calibration found them to be
    # the whole head's own, and Lite2 runs for the other ~37% of photos. ~35% less worker CPU
    # per photo; on validation the same category top-1 (0.952) but one photo less at TrashNet
    # class level (333 against 334), which the rule for making it the default did not allow.
    classifier_cascade: bool = False
    classifier_heads_dir: str = ""


@lru_cache
def get_settings() -> Settings:
    return Settings()
