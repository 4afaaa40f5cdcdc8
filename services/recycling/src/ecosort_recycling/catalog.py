"""The knowledge base as the running service holds it: read from the database once at start-up
and whenever the loaded version changes, indexed for search, with every category's answer body
built in advance. The waste pipeline asks for a category's guidance on every analysis, so that
answer costs a dictionary lookup, not a query."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

import structlog
from fastapi import FastAPI, Request
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ecosort_common.errors import Problem
from ecosort_recycling import models
from ecosort_recycling.knowledge_base import (
    CATEGORY_CODES,
    Category,
    KnowledgeBase,
    read_knowledge_files,
)
from ecosort_recycling.loader import load_knowledge
from ecosort_recycling.schemas import (
    CategoryOut,
    ItemHitOut,
    ItemPartOut,
    RegionalRuleOut,
    RuleOut,
    RuleSetOut,
    SourceOut,
)
from ecosort_recycling.search import SearchHit, SearchIndex

log = structlog.get_logger("ecosort.recycling.catalog")


class Catalog:
    def __init__(self, knowledge: KnowledgeBase, checksum: str) -> None:
        self.knowledge = knowledge
        self.checksum = checksum
        self.data_version = knowledge.data_version
        self.index = SearchIndex.from_knowledge(knowledge)
        self.categories: dict[str, Category] = {c.code: c for c in knowledge.categories}
        self.category_bodies: dict[str, CategoryOut] = {
            c.code: self._category_out(c) for c in knowledge.categories
        }

    def sources_out(self, keys: list[str]) -> list[SourceOut]:
        out = []
        for key in dict.fromkeys(keys):
            source = self.knowledge.sources[key]
            out.append(SourceOut(key=key, title=source.title, url=source.url, date=source.date))
        return out

    def regional_rules_out(self, code: str, region: str | None = None) -> list[RegionalRuleOut]:
        """The category's regional rules; with `region`, only that region's: its 5-digit
        code, its full name or one of its aliases, spacing ignored ("서울특별시 강남구",
        "강남구", "11680"). Nothing partial: "남구" is not 강남구, nor "서울" all of Seoul."""
        rules = self.knowledge.regions_for(code)
        if region is not None:
            wanted = "".join(region.split())
            rules = [
                rule
                for rule in rules
                if any(
                    wanted == "".join(name.split())
                    for name in (rule.region_code, rule.region_name, *rule.aliases)
                )
            ]
        return [
            RegionalRuleOut(
                region_code=rule.region_code,
                region_name=rule.region_name,
                text=rule.text,
                sources=rule.src,
                as_of=rule.as_of,
            )
            for rule in rules
        ]

    def varies_by_region(self, code: str) -> bool:
        return self.categories[code].varies_by_region or bool(self.knowledge.regions_for(code))

    def _category_out(self, category: Category) -> CategoryOut:
        rules = (category.disposal, *category.steps, *category.mistakes)
        cited = [key for rule in rules for key in rule.src]
        cited += [key for region in self.knowledge.regions_for(category.code) for key in region.src]
        return CategoryOut(
            code=category.code,
            name_ko=category.name_ko,
            name_en=category.name_en,
            disposal=category.disposal.text,
            steps=[rule.text for rule in category.steps],
            mistakes=[rule.text for rule in category.mistakes],
            marks=category.marks,
            sources=self.sources_out(cited),
            varies_by_region=self.varies_by_region(category.code),
            regional_rules=self.regional_rules_out(category.code),
            rules=RuleSetOut(
                disposal=_rule_out(category.disposal),
                steps=[_rule_out(rule) for rule in category.steps],
                mistakes=[_rule_out(rule) for rule in category.mistakes],
            ),
            data_version=self.data_version,
        )

    def item_out(self, hit: SearchHit) -> ItemHitOut:
        item = hit.item
        return ItemHitOut(
            id=item.id,
            name_ko=item.name_ko,
            name_en=item.name_en,
            primary_category=item.parts[0].category,
            categories=item.categories,
            parts=[
                ItemPartOut(
                    category=part.category,
                    category_name_ko=self.categories[part.category].name_ko,
                    part=part.part,
                    note=part.note,
                )
                for part in item.parts
            ],
            synonyms=item.synonyms,
            sources=self.sources_out(item.src),
            score=hit.score,
            matched=hit.matched,
            match=hit.how,
        )


def _rule_out(rule: Any) -> RuleOut:
    return RuleOut(text=rule.text, sources=rule.src, as_of=rule.as_of)


async def read_catalog(sessionmaker: async_sessionmaker[AsyncSession]) -> Catalog | None:
    """The loaded knowledge base, or None when nothing has been loaded yet."""
    async with sessionmaker() as session:
        version = await session.get(models.KnowledgeVersion, 1)
        if version is None:
            return None
        sources = (await session.execute(select(models.KnowledgeSource))).scalars().all()
        categories = (await session.execute(select(models.Category))).scalars().all()
        items = (await session.execute(select(models.Item).order_by(models.Item.id))).scalars()
        regions = (
            (await session.execute(select(models.RegionalRule).order_by(models.RegionalRule.id)))
            .scalars()
            .all()
        )
        knowledge = KnowledgeBase.model_validate(
            {
                "data_version": version.data_version,
                "sources": {
                    s.key: {
                        "title": s.title,
                        "url": None if s.url == models.NO_ADDRESS else s.url,
                        "date": s.date,
                        "date_kind": s.date_kind,
                        "tier": s.tier,
                    }
                    for s in sources
                },
                # In the contract's order (DESIGN.md §3), as the list endpoint shows them.
                "categories": sorted(
                    (c.document for c in categories),
                    key=lambda document: CATEGORY_CODES.index(document["code"]),
                ),
                "regions": [
                    {
                        "id": r.id,
                        "region_code": r.region_code,
                        "region_name": r.region_name,
                        "aliases": r.aliases,
                        "category": r.category_code,
                        "text": r.text,
                        "src": r.sources,
                        "as_of": r.as_of,
                    }
                    for r in regions
                ],
                "items": [
                    {
                        "id": i.id,
                        "name_ko": i.name_ko,
                        "name_en": i.name_en,
                        "synonyms": i.synonyms,
                        "parts": i.parts,
                        "src": i.sources,
                    }
                    for i in items
                ],
            }
        )
        return Catalog(knowledge, version.checksum)


async def _loaded_checksum(sessionmaker: async_sessionmaker[AsyncSession]) -> str | None:
    async with sessionmaker() as session:
        version = await session.get(models.KnowledgeVersion, 1)
        return version.checksum if version else None


async def start_catalog(app: FastAPI) -> Awaitable[None]:
    """Start-up hook: load the catalog, then keep it in step with the database (a new
    `load-knowledge` on any replica reaches every replica within the refresh interval)."""
    sessionmaker = app.state.sessionmaker
    app.state.catalog = None
    try:
        if app.state.settings.knowledge_autoload:
            await load_knowledge(sessionmaker, read_knowledge_files(), only_if_newer=True)
        app.state.catalog = await read_catalog(sessionmaker)
    except Exception as exc:  # not migrated yet, or the database is starting: retried below
        log.warning("catalog_load_failed", error=type(exc).__name__)
    if app.state.catalog is None:
        log.warning("knowledge_base_not_loaded", hint="run python -m ecosort_recycling migrate")
    return _refresh_forever(app, app.state.settings.knowledge_refresh_seconds)


async def _refresh_forever(app: FastAPI, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            current: Catalog | None = app.state.catalog
            if current is None and app.state.settings.knowledge_autoload:
                await load_knowledge(
                    app.state.sessionmaker, read_knowledge_files(), only_if_newer=True
                )
            checksum = await _loaded_checksum(app.state.sessionmaker)
            if checksum is not None and (current is None or checksum != current.checksum):
                app.state.catalog = await read_catalog(app.state.sessionmaker)
                log.info("catalog_reloaded", data_version=app.state.catalog.data_version)
        except Exception as exc:  # keep serving the catalog we have
            log.warning("catalog_refresh_failed", error=type(exc).__name__)


def get_catalog(request: Request) -> Catalog:
    catalog: Catalog | None = getattr(request.app.state, "catalog", None)
    if catalog is None:
        raise Problem(
            503,
            "The rules knowledge base has not been loaded yet "
            "(python -m ecosort_recycling migrate loads it).",
            title="Knowledge base not loaded",
            headers={"Retry-After": "30"},
        )
    return catalog
