"""A grounded answer from an OpenAI-compatible model (OpenAI, vLLM, Ollama's /v1), checked
against our rules before use (grounding.py). Imported only when a model is configured: the
`openai` package takes seconds to import, which a rules-only replica should not pay."""

from __future__ import annotations

import asyncio
import json
from contextvars import ContextVar
from typing import Any

import httpx
import openai
from openai.types.chat import ChatCompletionMessageParam
from pydantic import ValidationError

from ecosort_recycling.config import Settings
from ecosort_recycling.grounding import Grounding, ModelAnswer, Rejected, check_against_rules
from ecosort_recycling.limits import Call

SYSTEM_PROMPT = (
    "You are EcoSort's assistant for household waste separation in South Korea (분리배출). "
    "Answer in Korean, using ONLY the rules in the user message; do not add rules of your own. "
    "'answer' must say where it goes, naming the destination the rules give (for an item, the "
    "destination of its parts), and must name no other destination except to warn against it "
    "('…에 넣지 마세요'). "
    "Reply with one JSON object and nothing else: "
    '{"category": <one of allowed_categories>, "answer": <2-3 sentences>, '
    '"steps": [<preparation steps>], "mistakes": [<common mistakes>]}. '
    "If the rules do not answer the question, say so in 'answer' and repeat the rule's steps."
)


# The call the current task is making, for the HTTP client's hooks (they run in its task).
_current_call: ContextVar[Call | None] = ContextVar("recycling_llm_call", default=None)


async def _trace(event: str, info: dict[str, Any]) -> None:
    # httpcore: "http11.send_request_headers.started" (or http2.): the first byte of the request
    # is about to go out on an open connection.
    if event.endswith("send_request_headers.started"):
        call = _current_call.get()
        if call is not None:
            call.sent = True


async def _watch_sending(request: httpx.Request) -> None:
    request.extensions["trace"] = _trace


class GroundedModel:
    def __init__(self, settings: Settings) -> None:
        self.model = str(settings.llm_model)
        self.timeout = settings.llm_timeout_seconds
        self.max_tokens = settings.llm_max_output_tokens
        self.client = openai.AsyncOpenAI(
            base_url=settings.llm_base_url,
            api_key=settings.llm_api_key.get_secret_value(),
            timeout=settings.llm_timeout_seconds,
            # One attempt: a retry would double the wait of a person holding the app.
            max_retries=0,
            # Tells Call.sent: whether a failed or cancelled call reached the server.
            http_client=openai.DefaultAsyncHttpxClient(event_hooks={"request": [_watch_sending]}),
        )

    async def aclose(self) -> None:
        await self.client.close()

    def messages(self, grounding: Grounding) -> list[ChatCompletionMessageParam]:
        user = {
            "allowed_categories": grounding.allowed_categories,
            "rules": grounding.rules,
            "question": grounding.question or "이 품목은 어떻게 버리나요?",
        }
        return [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": json.dumps(user, ensure_ascii=False)},
        ]

    def tokens_needed(self, grounding: Grounding) -> int:
        """The most a call can cost: the prompt (estimated) and every token it may write."""
        return estimate_prompt_tokens(self.messages(grounding)) + self.max_tokens

    async def answer(
        self, grounding: Grounding, call: Call | None = None
    ) -> tuple[ModelAnswer, int | None]:
        """The checked answer and the tokens it cost (None when the server did not say);
        raises Rejected. `call` records whether the request was sent, for a caller that is
        cancelled meanwhile."""
        call = call if call is not None else Call()
        token = _current_call.set(call)
        try:
            async with asyncio.timeout(self.timeout):
                response = await self.client.chat.completions.create(
                    model=self.model,
                    messages=self.messages(grounding),
                    response_format={"type": "json_object"},
                    temperature=0,
                    max_tokens=self.max_tokens,
                )
        except (TimeoutError, openai.APITimeoutError) as exc:
            # Sent: the server may have generated the whole answer, its cost is unknown, not
            # zero. Not sent (a connect that never completed: the server is down or
            # unreachable): nothing was generated, and a dead server must not spend the day.
            raise Rejected("timeout", None if call.sent else 0) from exc
        except openai.APIStatusError as exc:
            # An error status instead of a completion: nothing was generated.
            raise Rejected("error", 0) from exc
        except openai.APIConnectionError as exc:
            # Refused, unresolvable, unreachable: no request reached a server, nothing to pay.
            # A connection lost after the request went out may have been processed: unknown.
            raise Rejected("error", None if call.sent else 0) from exc
        except openai.OpenAIError as exc:
            raise Rejected("error") from exc
        finally:
            _current_call.reset(token)
        tokens = response.usage.total_tokens if response.usage else None
        content = response.choices[0].message.content if response.choices else None
        try:
            answer = ModelAnswer.model_validate_json(content or "")
        except ValidationError as exc:
            raise Rejected("invalid_json", tokens) from exc
        try:
            check_against_rules(answer, grounding)
        except Rejected as exc:
            raise Rejected(exc.reason, tokens) from exc
        return answer, tokens


def estimate_prompt_tokens(messages: list[ChatCompletionMessageParam]) -> int:
    """An over-estimate: tokenizers spend one to two tokens on a Hangul syllable (3 UTF-8
    bytes) and about a quarter of one on an ASCII character, so half the bytes stays above
    both; the reservation is settled to the real count when the server reports it."""
    return sum(len(str(message.get("content") or "").encode()) // 2 + 8 for message in messages)
