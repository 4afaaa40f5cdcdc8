"""Answers to "how do I throw this away?": the rules answer, and the model's when one is
configured and its answer passes the checks. Model answers are cached in Redis by normalised
input (and data version, so a new knowledge base never serves stale advice)."""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING

import structlog
from redis.asyncio import Redis

from ecosort_recycling.catalog import Catalog
from ecosort_recycling.config import Settings
from ecosort_recycling.grounding import Grounding, Rejected
from ecosort_recycling.hangul import normalize
from ecosort_recycling.limits import budget_left, spend_tokens
from ecosort_recycling.schemas import FeedbackIn, FeedbackOut, ItemHitOut

if TYPE_CHECKING:
    from ecosort_recycling.llm import GroundedModel

log = structlog.get_logger("ecosort.recycling.feedback")
CACHE_KEY = "recycling:feedback-answer:{digest}"
# An item name must match at least this well to be treated as the item asked about.
ITEM_MATCH_MIN_SCORE = 75.0
REGION_HINT = "지역마다 다를 수 있으니 사는 시·군·구의 안내도 확인하세요."


def resolve_item(catalog: Catalog, text: str | None) -> ItemHitOut | None:
    if not text:
        return None
    hits = catalog.index.search(text, limit=1)
    if not hits or hits[0].score < ITEM_MATCH_MIN_SCORE:
        return None
    return catalog.item_out(hits[0])


def rules_answer(catalog: Catalog, request: FeedbackIn, item: ItemHitOut | None) -> FeedbackOut:
    """The deterministic answer, built from the knowledge base alone."""
    category = catalog.categories[request.category]
    regional = catalog.regional_rules_out(request.category, request.region)
    lines: list[str] = []
    item_steps: list[str] = []
    if item is not None:
        for part in item.parts:
            label = f"{item.name_ko}({part.part})" if part.part else item.name_ko
            lines.append(
                f"{label} → {part.category_name_ko}." + (f" {part.note}" if part.note else "")
            )
            if part.note and part.category == request.category:
                item_steps.append(part.note)
    lines.append(f"{category.name_ko}: {category.disposal.text}")
    # Another district's rule is no answer for this person: name rules only for their region,
    # and otherwise say that the rule varies (regional_rules still lists what we know).
    local = regional if request.region else []
    lines.extend(f"[{rule.region_name}] {rule.text}" for rule in local)
    varies = catalog.varies_by_region(request.category)
    if varies and not local:
        lines.append(REGION_HINT)
    cited = [key for rule in (category.disposal, *category.steps) for key in rule.src]
    cited += [key for rule in local for key in rule.sources]
    return FeedbackOut(
        category=category.code,
        category_name_ko=category.name_ko,
        item=item,
        answer=" ".join(lines),
        steps=item_steps + [rule.text for rule in category.steps],
        mistakes=[rule.text for rule in category.mistakes],
        source="rules",
        sources=catalog.sources_out(cited),
        varies_by_region=varies,
        regional_rules=regional,
        data_version=catalog.data_version,
    )


def _grounding(catalog: Catalog, request: FeedbackIn, rules: FeedbackOut) -> Grounding:
    allowed: list[str] = [request.category]
    if rules.item is not None:
        allowed += [c for c in rules.item.categories if c not in allowed]
    forbidden = [phrase for code in allowed for phrase in catalog.categories[code].forbidden]
    return Grounding(
        allowed_categories=allowed,
        forbidden_phrases=forbidden,
        rules={
            "category": {"code": rules.category, "name": rules.category_name_ko},
            "item": rules.item.model_dump(include={"name_ko", "parts"}) if rules.item else None,
            "disposal": catalog.categories[request.category].disposal.text,
            "steps": rules.steps,
            "mistakes": rules.mistakes,
            "regional_rules": [rule.model_dump(mode="json") for rule in rules.regional_rules],
            "varies_by_region": rules.varies_by_region,
        },
        question=request.question,
    )


def cache_key(catalog: Catalog, model: str, request: FeedbackIn) -> str:
    parts = [
        catalog.data_version,
        model,
        request.category,
        normalize(request.item or ""),
        normalize(request.question or ""),
        normalize(request.region or ""),
    ]
    digest = hashlib.sha256(json.dumps(parts, ensure_ascii=False).encode()).hexdigest()
    return CACHE_KEY.format(digest=digest)


async def answer_feedback(
    request: FeedbackIn,
    *,
    catalog: Catalog,
    redis: Redis,
    settings: Settings,
    model: GroundedModel | None,
) -> FeedbackOut:
    item = resolve_item(catalog, request.item)
    rules = rules_answer(catalog, request, item)
    if model is None:
        return rules
    key = cache_key(catalog, model.model, request)
    cached = await redis.get(key)
    if cached is not None:
        return FeedbackOut.model_validate_json(cached).model_copy(update={"cached": True})
    if not await budget_left(redis, settings.llm_daily_token_budget):
        return rules.model_copy(update={"fallback_reason": "budget_exhausted"})
    try:
        answer, tokens = await model.answer(_grounding(catalog, request, rules))
    except Rejected as exc:
        await spend_tokens(redis, exc.tokens)
        log.warning(
            "llm_answer_refused",
            reason=exc.reason,
            cause=type(exc.__cause__).__name__ if exc.__cause__ else None,
            detail=str(exc.__cause__)[:200] if exc.__cause__ else None,
            category=request.category,
        )
        return rules.model_copy(update={"fallback_reason": exc.reason})
    await spend_tokens(redis, tokens)
    result = rules.model_copy(
        update={
            "answer": answer.answer,
            "steps": answer.steps,
            "mistakes": answer.mistakes or rules.mistakes,
            "source": "llm",
        }
    )
    await redis.set(key, result.model_dump_json(), ex=settings.feedback_cache_seconds)
    return result
