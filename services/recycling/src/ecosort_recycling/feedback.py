"""Answers to "how do I throw this away?": the rules answer, and the model's when one is
configured and its answer passes the checks. Model answers are cached in Redis by normalised
input (and data version, so a new knowledge base never serves stale advice)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import uuid
from typing import TYPE_CHECKING

import structlog
from redis.asyncio import Redis

from ecosort_recycling.catalog import Catalog
from ecosort_recycling.config import Settings
from ecosort_recycling.grounding import STREAMS, Grounding, Rejected, plain, streams_sent_to
from ecosort_recycling.hangul import normalize
from ecosort_recycling.limits import Call, reserve_tokens, settle_tokens
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


def _vocabulary(catalog: Catalog, codes: list[str], item: ItemHitOut | None) -> tuple[str, ...]:
    words = [
        word for code in codes for word in re.split(r"[·()\s]+", catalog.categories[code].name_ko)
    ]
    # "폐건전지" is also asked about as "건전지", "폐식용유" as "식용유".
    words += [word[1:] for word in words if word.startswith("폐") and len(word) > 2]
    if item is not None:
        words += [item.name_ko, *item.synonyms, *(part.part for part in item.parts if part.part)]
    for code in codes:
        places, materials = STREAMS[code]
        words += [*places, *materials]
    return tuple(dict.fromkeys(w for w in (plain(word) for word in words) if len(w) >= 2))


def _item_named_in(catalog: Catalog, question: str | None) -> ItemHitOut | None:
    """The item the question names by its own Korean name or a synonym (not by a category's
    name: "종량제봉투에 버려도 돼요?" names a place, not the first item of general)."""
    hit = resolve_item(catalog, question)
    if hit is None or hit.matched not in (hit.name_ko, *hit.synonyms):
        return None
    return hit


def grounding_for(catalog: Catalog, request: FeedbackIn, rules: FeedbackOut) -> Grounding:
    allowed: list[str] = [request.category]
    if rules.item is not None:
        allowed += [c for c in rules.item.categories if c not in allowed]
    # The item's own parts say where it goes, whatever category was picked: a chicken bone
    # asked about under "food" goes to the 종량제봉투, a broken lamp not to the lamp box.
    own = rules.item.categories if rules.item is not None else [request.category]
    notes = [part.note for part in rules.item.parts if part.note] if rules.item else []
    # Another district's rule is no rule for this person, and none applies without a region.
    local = rules.regional_rules if request.region else []
    destinations = frozenset(own) | streams_sent_to(
        [
            *(catalog.categories[code].disposal.text for code in own),
            *notes,
            *(rule.text for rule in local),
        ],
        framed_too=True,
    )
    also_named = streams_sent_to(rules.steps, framed_too=True)
    # The question may name another thing than the rules are about ("보조배터리는 어떻게
    # 버려요?" under general, without an item): an answer about it must agree with its rules
    # too, so only the streams both send things to remain (none: no answer can pass).
    named = _item_named_in(catalog, request.question)
    if named is not None and (rules.item is None or named.id != rules.item.id):
        theirs = frozenset(named.categories) | streams_sent_to(
            [
                *(catalog.categories[code].disposal.text for code in named.categories),
                *(part.note for part in named.parts if part.note),
            ],
            framed_too=True,
        )
        destinations &= theirs
        also_named &= theirs
    return Grounding(
        allowed_categories=allowed,
        destinations=destinations,
        also_named=also_named,
        in_mistakes=streams_sent_to(rules.mistakes, framed_too=False),
        vocabulary=_vocabulary(catalog, allowed, rules.item),
        conditions=tuple(
            plain(phrase) for code in allowed for phrase in catalog.categories[code].forbidden
        ),
        rules={
            "category": {"code": rules.category, "name": rules.category_name_ko},
            "item": rules.item.model_dump(include={"name_ko", "parts"}) if rules.item else None,
            "disposal": catalog.categories[request.category].disposal.text,
            "steps": rules.steps,
            "mistakes": rules.mistakes,
            "regional_rules": [rule.model_dump(mode="json") for rule in local],
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
    user_id: uuid.UUID,
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
    grounding = grounding_for(catalog, request, rules)
    if not grounding.destinations:
        # The question is about a thing the rules we would give send nowhere they send this:
        # no answer could pass the check, so the call would be paid for nothing.
        return rules.model_copy(update={"fallback_reason": "off_topic"})
    reservation = await reserve_tokens(
        redis,
        user_id,
        model.tokens_needed(grounding),
        daily_budget=settings.llm_daily_token_budget,
        user_share=settings.llm_daily_tokens_per_user,
    )
    if reservation is None:
        # The day's budget or this user's share of it: the same answer, since either way the
        # person gets the model's again tomorrow and not before.
        return rules.model_copy(update={"fallback_reason": "budget_exhausted"})
    call = Call()
    # What to settle the reservation to; None (unknown) keeps it all, as for a timeout.
    used: int | None = None
    try:
        answer, used = await model.answer(grounding, call)
    except Rejected as exc:
        used = exc.tokens
        log.warning(
            "llm_answer_refused",
            reason=exc.reason,
            cause=type(exc.__cause__).__name__ if exc.__cause__ else None,
            detail=str(exc.__cause__)[:200] if exc.__cause__ else None,
            category=request.category,
        )
        return rules.model_copy(update={"fallback_reason": exc.reason})
    except asyncio.CancelledError:
        # The client went away mid-call: a request the server received may have been
        # answered (keep the reservation); one that never left cost nothing.
        used = None if call.sent else 0
        raise
    finally:
        # Shielded: a cancelled request must still settle, or its reservation leaks.
        await asyncio.shield(settle_tokens(redis, reservation, used))
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
