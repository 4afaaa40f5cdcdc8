"""Providers by name, so settings can pick one (`local` is the default and needs no network),
and the pipeline's selection of the configured provider with fallback to `local`."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from PIL import Image

from .base import Classification, Classifier
from .head import MODELS_DIR, seed_heads
from .remote import CallBudget, ProviderError, RemoteClassifier

log = structlog.get_logger(__name__)

ClassifierFactory = Callable[..., Classifier]
_FACTORIES: dict[str, ClassifierFactory] = {}


def register_provider(name: str, factory: ClassifierFactory) -> None:
    _FACTORIES[name] = factory


def create_classifier(name: str = "local", **options: Any) -> Classifier:
    if name == "local" and name not in _FACTORIES:
        from .local import LocalClassifier

        register_provider("local", LocalClassifier)
    try:
        factory = _FACTORIES[name]
    except KeyError:
        raise ValueError(
            f"unknown classifier provider {name!r}; known: {sorted(_FACTORIES)}"
        ) from None
    return factory(**options)


def providers() -> list[str]:
    return sorted({"local", *_FACTORIES})


# --- Provider selection with fallback (the pipeline's entry point) --------------------------
#
# A remote provider (openai, roboflow) that fails falls back to `local`, so a photo still gets a
# category when a third party is down; the answer records which provider actually produced it.
# The local model is loaded once per process, and only when it is first needed.

LOCAL = "local"
# Remote calls run on threads of their own so that a late one can be given up on: a provider
# answering byte by byte is bounded only per read by its client's timeout. A call given up on
# has spent its budget (CallBudget), so it starts no further attempt, and keeps its thread until
# the attempt in flight ends: its timeouts were cut to what was left of the budget when it
# started. With all the threads taken, the next photo waits its deadline and falls back too.
REMOTE_CALL_THREADS = 4


@dataclass(frozen=True)
class ProviderAnswer:
    classification: Classification
    provider: str  # the provider that produced the classification
    fallback_reason: str | None = None  # why the configured provider did not


class ClassifierRegistry:
    def __init__(
        self,
        provider: str,
        *,
        local_loader: Callable[[], Classifier],
        remote: RemoteClassifier | None = None,
        remote_deadline_seconds: float = 30.0,
    ) -> None:
        if provider != LOCAL and remote is None:
            raise ValueError(f"provider {provider!r} needs its remote classifier")
        self.provider = provider
        self._remote = remote
        self.remote_deadline_seconds = remote_deadline_seconds
        self._remote_calls = (
            ThreadPoolExecutor(REMOTE_CALL_THREADS, "remote-classifier") if remote else None
        )
        self._local_loader = local_loader
        self._local: Classifier | None = None
        self._lock = threading.Lock()

    def local(self) -> Classifier:
        with self._lock:  # loading twice would double the memory of the model
            if self._local is None:
                self._local = self._local_loader()
            return self._local

    def classify(self, image: Image.Image) -> ProviderAnswer:
        """The configured provider's answer, or the local model's when a remote one fails or
        takes longer than `remote_deadline_seconds` in all. Raises ProviderError only when the
        local model fails too."""
        if self._remote is None or self._remote_calls is None:
            return ProviderAnswer(self._classify_locally(image), LOCAL)
        # The budget runs from now, time queued included, and ends before the wait below does.
        budget = CallBudget(self.remote_deadline_seconds)
        call = self._remote_calls.submit(self._remote.classify, image, budget)
        try:
            return ProviderAnswer(call.result(self.remote_deadline_seconds), self.provider)
        except TimeoutError:
            # Still queued behind calls given up on before (all threads taken): it is dropped
            # before it takes a thread. One already running starts no further attempt, its
            # budget being spent.
            call.cancel()
            reason = f"no answer within {self.remote_deadline_seconds:g} s"
        except ProviderError as exc:
            reason = str(exc)
        except Exception as exc:  # an answer it could not make sense of is a failure like any
            reason = f"{type(exc).__name__}: {exc}"
        log.warning("classifier.fallback_to_local", provider=self.provider, reason=reason)
        try:
            local = self._classify_locally(image)
        except ProviderError as local_exc:
            raise ProviderError(f"{reason}; fallback {local_exc}") from local_exc
        return ProviderAnswer(local, LOCAL, fallback_reason=reason)

    def _classify_locally(self, image: Image.Image) -> Classification:
        try:
            return self.local().classify(image)
        except Exception as exc:  # a broken model file or runtime: let the task retry, then fail
            raise ProviderError(f"local: {type(exc).__name__}: {exc}") from exc


def registry_from_settings(
    settings: Any, *, local_loader: Callable[[], Classifier] | None = None
) -> ClassifierRegistry:
    """The registry CLASSIFIER_PROVIDER asks for; a remote provider without its key is a
    configuration error, reported at start-up rather than on the first photo."""
    provider = settings.classifier_provider
    heads_dir = Path(settings.classifier_heads_dir) if settings.classifier_heads_dir else None

    def load_local() -> Classifier:
        if heads_dir is not None:
            seed_heads(heads_dir, MODELS_DIR / "heads")
        return create_classifier(
            LOCAL,
            intra_op_threads=settings.classifier_threads,
            test_time_augmentation=settings.classifier_test_time_augmentation,
            cascade=settings.classifier_cascade,
            heads_dir=heads_dir,
        )

    loader = local_loader or load_local
    if provider == LOCAL:
        return ClassifierRegistry(LOCAL, local_loader=loader)
    if provider == "openai":
        from .openai_provider import create_openai_classifier

        if not settings.openai_api_key:
            raise ValueError("CLASSIFIER_PROVIDER=openai needs OPENAI_API_KEY")
        remote: RemoteClassifier = create_openai_classifier(
            api_key=settings.openai_api_key,
            model=settings.openai_model,
            base_url=settings.openai_base_url or None,
            timeout_seconds=settings.openai_timeout_seconds,
            max_retries=settings.openai_max_retries,
            max_output_tokens=settings.openai_max_output_tokens,
            min_confidence=settings.remote_min_confidence,
        )
    elif provider == "roboflow":
        from .roboflow_provider import create_roboflow_classifier

        if not (settings.roboflow_api_key and settings.roboflow_model_id):
            raise ValueError(
                "CLASSIFIER_PROVIDER=roboflow needs ROBOFLOW_API_KEY and ROBOFLOW_MODEL_ID"
            )
        remote = create_roboflow_classifier(
            api_key=settings.roboflow_api_key,
            model_id=settings.roboflow_model_id,
            base_url=settings.roboflow_base_url,
            class_map=settings.roboflow_class_map or None,
            timeout_seconds=settings.roboflow_timeout_seconds,
            min_confidence=settings.remote_min_confidence,
        )
    else:
        raise ValueError(f"unknown CLASSIFIER_PROVIDER {provider!r}")
    return ClassifierRegistry(
        provider,
        local_loader=loader,
        remote=remote,
        remote_deadline_seconds=settings.remote_classifier_deadline_seconds,
    )
