"""The `roboflow` provider: a detection (or classification) model hosted by Roboflow, over HTTP.

`POST {base_url}/{project}/{version}?api_key=…&confidence=…` with the base64 JPEG as the body
(Roboflow's hosted inference API). Its class names are the dataset's own, so a mapping turns
them into our category codes; classes we cannot map are ignored.
"""

from __future__ import annotations

import base64
import json
import time
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
from PIL import Image

from ecosort_waste.classifier.base import Classification
from ecosort_waste.classifier.remote import (
    CATEGORY_CODES,
    MAX_RETRY_AFTER_SECONDS,
    UNLIMITED,
    CallBudget,
    ProviderError,
    checked_confidence,
    jpeg_bytes,
    ranked_classification,
)

# Class names of the public trash/TACO-style datasets on Roboflow Universe → our codes.
# Overridable per model (ROBOFLOW_CLASS_MAP); names are compared lower-cased.
DEFAULT_CLASS_MAP: dict[str, str] = {
    "cardboard": "paper",
    "paper": "paper",
    "carton": "paper_pack",
    "glass": "glass_bottle",
    "glass bottle": "glass_bottle",
    "metal": "can",
    "can": "can",
    "aluminium can": "can",
    "plastic": "plastic",
    "plastic bottle": "pet_clear",
    "pet": "pet_clear",
    "plastic bag": "vinyl",
    "styrofoam": "styrofoam",
    "clothes": "textile",
    "textile": "textile",
    "battery": "battery",
    "light bulb": "lamp",
    "e-waste": "small_appliance",
    "biodegradable": "food",
    "food": "food",
    "trash": "general",
}
RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
# A prediction list for one photo is a few KB; a body far past that is not an answer we want,
# and reading it whole would hold the worker's memory hostage.
MAX_BODY_BYTES = 1_000_000


class RoboflowClassifier:
    """Classifies with a Roboflow-hosted model; any failure raises ProviderError."""

    name = "roboflow"

    def __init__(
        self,
        http: httpx.Client,
        *,
        base_url: str,
        model_id: str,
        api_key: str,
        class_map: dict[str, str] | None = None,
        min_confidence: float = 0.5,
        attempts: int = 3,
        backoff_seconds: float = 0.2,
        deadline_seconds: float = 10.0,
        max_body_bytes: int = MAX_BODY_BYTES,
        max_retry_after_seconds: float = MAX_RETRY_AFTER_SECONDS,
    ) -> None:
        class_map = {name.lower(): code for name, code in (class_map or DEFAULT_CLASS_MAP).items()}
        unknown = set(class_map.values()) - set(CATEGORY_CODES)
        if unknown:
            raise ValueError(f"ROBOFLOW class map names unknown category codes: {sorted(unknown)}")
        self._http = http
        self._url = f"{base_url.rstrip('/')}/{model_id.strip('/')}"
        self._model_id = model_id
        self._api_key = api_key
        self._class_map = class_map
        self._min_confidence = min_confidence
        self._attempts = attempts
        self._backoff_seconds = backoff_seconds
        # The client's timeout bounds each read; this bounds one whole attempt, so a server
        # trickling its body a byte at a time cannot hold the worker indefinitely.
        self._deadline_seconds = deadline_seconds
        self._max_body_bytes = max_body_bytes
        self._max_retry_after_seconds = max_retry_after_seconds

    def classify(self, image: Image.Image, budget: CallBudget = UNLIMITED) -> Classification:
        body = base64.b64encode(jpeg_bytes(image))
        answer = self._post_with_retry(body, budget)
        return ranked_classification(
            self._ranked(answer),
            min_confidence=self._min_confidence,
            model_version=f"roboflow:{self._model_id}",
            mapping_note=(
                "roboflow hosted model; its classes mapped to our categories by name "
                "(material classes like 'plastic' may be pet_clear or vinyl)"
            ),
        )

    def _post_with_retry(self, body: bytes, budget: CallBudget) -> dict[str, Any]:
        reason = "no attempt made"
        for attempt in range(1, self._attempts + 1):
            attempt_seconds = budget.attempt_seconds(self._deadline_seconds)
            if not attempt_seconds:
                reason += "; no time left for another attempt"
                break
            pause = self._backoff_seconds * 2 ** (attempt - 1)
            started = time.monotonic()
            try:
                with self._http.stream(
                    "POST",
                    self._url,
                    params={"api_key": self._api_key, "confidence": 10},
                    content=body,
                    headers={"Content-Type": "application/x-www-form-urlencoded"},
                    timeout=_capped(self._http.timeout, attempt_seconds),
                ) as response:
                    if response.status_code == 200:
                        return _json_object(self._read_body(response, started, attempt_seconds))
                    reason = f"HTTP {response.status_code}"
                    if response.status_code not in RETRYABLE_STATUS:
                        break  # a bad key or a missing model will not get better by asking again
                    retry_after = _retry_after_seconds(response.headers)
                    if retry_after is not None:
                        if retry_after > self._max_retry_after_seconds:
                            reason += f" (asked to retry after {retry_after:.0f} s)"
                            break  # waiting would park the worker; the local model answers now
                        pause = max(pause, retry_after)
            except httpx.TransportError as exc:
                reason = f"{type(exc).__name__}: {exc}"
            if attempt < self._attempts and not budget.pause(pause):
                reason += "; no time left for another attempt"
                break
        raise ProviderError(f"roboflow: {reason}")

    def _read_body(self, response: httpx.Response, started: float, seconds: float) -> bytes:
        """The body, streamed: at most `max_body_bytes`, and done within `seconds` of `started`
        (the monotonic time the request began)."""
        chunks: list[bytes] = []
        size = 0
        for chunk in response.iter_bytes():
            size += len(chunk)
            if size > self._max_body_bytes:
                raise ProviderError(f"roboflow: answer larger than {self._max_body_bytes} bytes")
            if time.monotonic() - started > seconds:
                raise ProviderError(f"roboflow: answer took over {seconds:g} s")
            chunks.append(chunk)
        return b"".join(chunks)

    def _ranked(self, answer: dict[str, Any]) -> list[tuple[str, float]]:
        """Best confidence per mapped category, best first."""
        best: dict[str, float] = {}
        for class_name, confidence in _predictions(answer):
            code = self._class_map.get(class_name.lower())
            if code is not None and confidence > best.get(code, -1.0):
                best[code] = confidence
        return sorted(best.items(), key=lambda item: item[1], reverse=True)


def _capped(timeout: httpx.Timeout, seconds: float) -> httpx.Timeout:
    """`timeout` with no phase (connect, read, write, pool) longer than `seconds`."""
    return httpx.Timeout(
        **{
            phase: seconds if limit is None else min(limit, seconds)
            for phase, limit in timeout.as_dict().items()
        }
    )


def _retry_after_seconds(headers: httpx.Headers) -> float | None:
    """Retry-After as seconds from now (it is either seconds or an HTTP date); None when absent
    or unreadable, and then the usual backoff applies."""
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        answer = json.loads(body)
    except (ValueError, RecursionError) as exc:  # RecursionError: absurdly deep nesting
        raise ProviderError("roboflow: answer is not JSON") from exc
    if not isinstance(answer, dict) or "predictions" not in answer:
        raise ProviderError("roboflow: answer has no predictions")
    return answer


def _predictions(answer: dict[str, Any]) -> list[tuple[str, float]]:
    """(class, confidence) pairs from any of Roboflow's answer shapes: detection and
    single-label classification give a list, multi-label classification a mapping."""
    predictions = answer["predictions"]
    try:
        if isinstance(predictions, dict):
            pairs = [(name, p["confidence"]) for name, p in predictions.items()]
        else:
            pairs = [(p["class"], p["confidence"]) for p in predictions]
        return [(_class_name(name), checked_confidence(value)) for name, value in pairs]
    except (KeyError, TypeError, ValueError) as exc:
        raise ProviderError(f"roboflow: malformed prediction: {exc}") from exc


def _class_name(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"class is not a string but {type(value).__name__}")
    return value


def create_roboflow_classifier(
    *,
    api_key: str,
    model_id: str,
    base_url: str = "https://detect.roboflow.com",
    class_map: dict[str, str] | None = None,
    timeout_seconds: float = 10.0,
    min_confidence: float = 0.5,
) -> RoboflowClassifier:
    http = httpx.Client(timeout=httpx.Timeout(timeout_seconds))
    return RoboflowClassifier(
        http,
        base_url=base_url,
        model_id=model_id,
        api_key=api_key,
        class_map=class_map,
        min_confidence=min_confidence,
        deadline_seconds=timeout_seconds,
    )
