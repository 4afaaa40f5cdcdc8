"""The `openai` provider: a vision model asked for JSON constrained to our category codes.

Structured output (`response_format` of type `json_schema`, strict) makes the model answer with
exactly our schema and only our codes; the answer is still validated here, because a provider
that says otherwise is a provider error, not a category. Timeouts and retries (with backoff,
honouring Retry-After) are the SDK's own, except that a Retry-After longer than
`MAX_RETRY_AFTER_SECONDS` ends the call (the SDK would wait up to two minutes), and that they
keep within the call's budget; the body is parsed here, strictly, because the SDK passes a
malformed one through as a str, a list or a half-built object.
"""

from __future__ import annotations

import base64
import sys
from contextvars import ContextVar
from typing import Any, Literal

import openai
from PIL import Image
from pydantic import BaseModel, Field, ValidationError

from ecosort_waste.classifier.base import Classification
from ecosort_waste.classifier.remote import (
    CATEGORY_CODES,
    MAX_RETRY_AFTER_SECONDS,
    UNLIMITED,
    CallBudget,
    ProviderError,
    jpeg_bytes,
    ranked_classification,
)

# Our answer is ~70 tokens; the cap bounds the cost and the time of a model that rambles in the
# free-text fields or, as JSON output can, emits whitespace until its token limit (then the
# answer ends with finish_reason "length": a provider error, and the local model answers).
MAX_OUTPUT_TOKENS = 400

INSTRUCTIONS = (
    "You sort household waste under South Korea's separate-collection rules (분리배출). "
    "Look at the photo and answer with the collection category of the main item, your "
    "confidence from 0 to 1, up to three candidate categories best first (the first being your "
    "answer), the item's name in a few words, and a note: when parts of the item go to different "
    "categories (a greasy pizza box: clean part paper, greasy part general) say which part goes "
    "where, else an empty string. Use only the category codes of the schema."
)


def response_schema() -> dict[str, Any]:
    code = {"type": "string", "enum": list(CATEGORY_CODES)}
    confidence = {"type": "number", "minimum": 0, "maximum": 1}
    return {
        "type": "object",
        "properties": {
            "category": code,
            "confidence": confidence,
            "candidates": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"category": code, "confidence": confidence},
                    "required": ["category", "confidence"],
                    "additionalProperties": False,
                },
            },
            "item": {"type": "string"},
            "note": {"type": "string"},
        },
        "required": ["category", "confidence", "candidates", "item", "note"],
        "additionalProperties": False,
    }


# The parts of a chat completion we read; anything else in it may change without harm.
class _Message(BaseModel):
    content: str | None = None
    refusal: str | None = None


class _Choice(BaseModel):
    finish_reason: str | None = None
    message: _Message


class _Completion(BaseModel):
    model: str | None = None
    choices: list[_Choice]


class _Candidate(BaseModel):
    category: str
    confidence: float = Field(ge=0, le=1)


class _Answer(BaseModel):
    category: str
    confidence: float = Field(ge=0, le=1)
    candidates: list[_Candidate]
    item: str = ""
    note: str = ""


class OpenAIClassifier:
    """Classifies by asking an OpenAI vision model; any failure raises ProviderError."""

    name = "openai"

    def __init__(
        self,
        client: openai.OpenAI,
        *,
        model: str,
        min_confidence: float = 0.5,
        image_detail: Literal["auto", "low", "high"] = "low",
        max_output_tokens: int = MAX_OUTPUT_TOKENS,
    ) -> None:
        self._client = client
        self._model = model
        self._max_output_tokens = max_output_tokens
        self._min_confidence = min_confidence
        # "low" sends a 512 px thumbnail: enough to tell a can from a bottle, and cheaper.
        self._image_detail = image_detail

    def classify(self, image: Image.Image, budget: CallBudget = UNLIMITED) -> Classification:
        data_url = "data:image/jpeg;base64," + base64.b64encode(jpeg_bytes(image)).decode()
        token = _call_budget.set(budget)
        try:
            raw = self._client.chat.completions.with_raw_response.create(
                model=self._model,
                messages=[
                    {"role": "system", "content": INSTRUCTIONS},
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "Which collection category is this?"},
                            {
                                "type": "image_url",
                                "image_url": {"url": data_url, "detail": self._image_detail},
                            },
                        ],
                    },
                ],
                max_completion_tokens=self._max_output_tokens,
                response_format={
                    "type": "json_schema",
                    "json_schema": {
                        "name": "waste_classification",
                        "strict": True,
                        "schema": response_schema(),
                    },
                },
            )
        except openai.OpenAIError as exc:  # connection, timeout, 4xx/5xx after the SDK's retries
            raise ProviderError(f"openai: {type(exc).__name__}: {exc}") from exc
        finally:
            _call_budget.reset(token)
        completion = _parse_completion(raw.content)
        answer = _parse_answer(completion)
        return ranked_classification(
            _ranked(answer),
            min_confidence=self._min_confidence,
            model_version=f"openai:{completion.model or self._model}",
            mapping_note=_mapping_note(answer),
        )


# The budget of the call this thread is making. The SDK runs the call's attempts, and the
# pauses between them, in the calling thread, and its request options have no place for a
# budget; the client (shared by the registry's threads) reads it here.
_call_budget: ContextVar[CallBudget] = ContextVar("openai_call_budget", default=UNLIMITED)


class _BudgetedOpenAI(openai.OpenAI):
    """The SDK's client, its retries kept within the call's budget (the registry has given up
    on the call once it is spent; a request sent after that is paid for and never read): each
    attempt's timeout is at most what is left of it, and no attempt or pause starts that could
    not end within it. It also retries only when a Retry-After (or retry-after-ms) asks for at
    most `max_retry_after_seconds`: the SDK honours up to two minutes, and waiting most of the
    budget would hold the photo of a person who is waiting. Refused, the call fails now and the
    local model answers, as the roboflow provider does."""

    def __init__(self, *, timeout: float, max_retry_after_seconds: float, **options: Any) -> None:
        super().__init__(timeout=timeout, **options)
        self.attempt_timeout_seconds = timeout
        self.max_retry_after_seconds = max_retry_after_seconds

    def _prepare_options(self, options: Any) -> Any:  # the SDK's FinalRequestOptions
        # Called before every attempt, the first one included, with options of its own.
        seconds = _call_budget.get().attempt_seconds(self.attempt_timeout_seconds)
        if not seconds:
            raise ProviderError("openai: no time left for another attempt")
        options.timeout = seconds
        return super()._prepare_options(options)

    def _sleep_for_retry(
        self,
        *,
        retries_taken: int,
        max_retries: int,
        options: Any,  # the SDK's FinalRequestOptions
        response: Any,  # the SDK's own (httpx2) Response, or None after no answer
    ) -> None:
        # The SDK's own pause (Retry-After, else backoff with jitter), within the budget.
        headers = None if response is None else response.headers
        seconds = self._calculate_retry_timeout(max_retries - retries_taken, options, headers)
        if not _call_budget.get().pause(seconds):
            # The SDK pauses while it handles the failed attempt: its failure is the reason.
            failure = (
                type(sys.exception()).__name__
                if response is None
                else f"HTTP {response.status_code}"
            )
            raise ProviderError(f"openai: {failure}; no time left for another attempt")

    def _should_retry(self, response: Any) -> bool:  # the SDK's own (httpx2) Response
        retry_after = self._parse_retry_after_header(response.headers)
        if retry_after is not None and retry_after > self.max_retry_after_seconds:
            return False
        return super()._should_retry(response)


def create_openai_classifier(
    *,
    api_key: str,
    model: str,
    base_url: str | None = None,
    timeout_seconds: float = 20.0,
    max_retries: int = 2,
    min_confidence: float = 0.5,
    max_output_tokens: int = MAX_OUTPUT_TOKENS,
    max_retry_after_seconds: float = MAX_RETRY_AFTER_SECONDS,
) -> OpenAIClassifier:
    client = _BudgetedOpenAI(
        max_retry_after_seconds=max_retry_after_seconds,
        api_key=api_key,
        base_url=base_url,
        timeout=timeout_seconds,
        max_retries=max_retries,
        # The SDK's client follows redirects, which would re-POST the photo (and the key) to
        # wherever a Location header points; a redirect is an error here.
        http_client=openai.DefaultHttpxClient(timeout=timeout_seconds, follow_redirects=False),
    )
    return OpenAIClassifier(
        client, model=model, min_confidence=min_confidence, max_output_tokens=max_output_tokens
    )


def _parse_completion(body: bytes) -> _Completion:
    try:
        return _Completion.model_validate_json(body)
    except ValidationError as exc:  # also not JSON at all, or nested past the parser's limit
        raise ProviderError(f"openai: not a chat completion: {_first_error(exc)}") from exc


def _parse_answer(completion: _Completion) -> _Answer:
    if not completion.choices:
        raise ProviderError("openai: no choices in the answer")
    choice = completion.choices[0]
    if choice.message.refusal:
        raise ProviderError(f"openai: refused: {choice.message.refusal}")
    if choice.finish_reason != "stop" or not choice.message.content:
        raise ProviderError(f"openai: incomplete answer ({choice.finish_reason})")
    try:
        answer = _Answer.model_validate_json(choice.message.content)
    except ValidationError as exc:
        reason = _first_error(exc)
        raise ProviderError(f"openai: answer does not match the schema: {reason}") from exc
    unknown = {answer.category, *(c.category for c in answer.candidates)} - set(CATEGORY_CODES)
    if unknown:
        raise ProviderError(f"openai: unknown category codes {sorted(unknown)}")
    return answer


def _first_error(exc: ValidationError) -> str:
    """Where and what, without echoing the (possibly huge) input."""
    error = exc.errors(include_url=False)[0]
    where = ".".join(str(part) for part in error["loc"]) or "body"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{where}: {error['msg']}{more}"


def _ranked(answer: _Answer) -> list[tuple[str, float]]:
    """The answer and its candidates, each code once at its highest confidence, best first
    (ties by code): the model's `category` need not be its most confident one."""
    best: dict[str, float] = {}
    for category, confidence in [
        (answer.category, answer.confidence),
        *((c.category, c.confidence) for c in answer.candidates),
    ]:
        best[category] = max(confidence, best.get(category, 0.0))
    return sorted(best.items(), key=lambda item: (-item[1], item[0]))


def _mapping_note(answer: _Answer) -> str:
    # The model's confidence is self-reported, not calibrated like the local head's: say so.
    parts = [f"openai vision model, self-reported confidence; item: {answer.item or 'unknown'}"]
    if answer.note:
        parts.append(answer.note)
    return ". ".join(parts)
