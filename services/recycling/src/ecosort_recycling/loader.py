"""Copy the knowledge-base data files into the database: idempotent, and atomic.

Run as `python -m ecosort_recycling load-knowledge`; `migrate` runs it too, right after the
schema migrations, so a fresh stack has its rules as soon as `migrate` has finished. The service
also loads its own files at start-up when they are newer than what the database holds (the local
stack skips `migrate` when the schema is at head, so new data files would otherwise wait for the
next schema change), never going back to an older version during a rolling update. Loading the
same files twice changes nothing (upserts keyed by the files' ids, and a content digest that
short-circuits a repeat); rows that disappeared from the files are deleted.
"""

from __future__ import annotations

import asyncio
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy import delete, func, inspect, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import InstrumentedAttribute

from ecosort_common.db import create_engine, create_sessionmaker
from ecosort_recycling import models
from ecosort_recycling.knowledge_base import KnowledgeBase, read_knowledge_files

log = structlog.get_logger("ecosort.recycling.loader")
# Two replicas running `migrate` at once load one after the other, not interleaved.
LOAD_LOCK_ID = zlib.crc32(b"ecosort_recycling.load-knowledge")


@dataclass(frozen=True)
class LoadResult:
    data_version: str
    changed: bool
    categories: int
    items: int
    regional_rules: int
    sources: int


async def _upsert(
    session: AsyncSession, table: type[models.Base], rows: list[dict[str, Any]]
) -> None:
    if not rows:
        return
    statement = insert(table).values(rows)
    keys = {column.name for column in inspect(table).primary_key}
    updates = {name: statement.excluded[name] for name in rows[0] if name not in keys}
    await session.execute(statement.on_conflict_do_update(index_elements=keys, set_=updates))


async def _delete_missing(
    session: AsyncSession, column: InstrumentedAttribute[str], keep: Sequence[str]
) -> None:
    await session.execute(delete(column.class_).where(column.not_in(list(keep))))


async def _count(session: AsyncSession, table: type[models.Base]) -> int:
    return int((await session.execute(select(func.count()).select_from(table))).scalar_one())


def version_key(data_version: str) -> tuple[int, ...]:
    """Data versions compare as numbers: "2026.11.27-2" → (2026, 11, 27, 2)."""
    return tuple(int(part) for part in re.findall(r"\d+", data_version))


async def load_knowledge(
    sessionmaker: async_sessionmaker[AsyncSession],
    knowledge: KnowledgeBase,
    *,
    only_if_newer: bool = False,
) -> LoadResult:
    """Load `knowledge` unless the same content is loaded already; with `only_if_newer`, also
    leave a newer loaded data version alone (an old replica must not roll the data back)."""
    checksum = knowledge.checksum()
    async with sessionmaker() as session, session.begin():
        await session.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": LOAD_LOCK_ID})
        current = await session.get(models.KnowledgeVersion, 1)
        changed = current is None or current.checksum != checksum
        if changed and current is not None and only_if_newer:
            changed = version_key(knowledge.data_version) >= version_key(current.data_version)
        if changed:
            await _write(session, knowledge)
            await _upsert(
                session,
                models.KnowledgeVersion,
                [{"id": 1, "data_version": knowledge.data_version, "checksum": checksum}],
            )
        result = LoadResult(
            data_version=knowledge.data_version,
            changed=changed,
            categories=await _count(session, models.Category),
            items=await _count(session, models.Item),
            regional_rules=await _count(session, models.RegionalRule),
            sources=await _count(session, models.KnowledgeSource),
        )
    log.info("knowledge_loaded", **result.__dict__)
    return result


async def _write(session: AsyncSession, knowledge: KnowledgeBase) -> None:
    # Parents first (sources, categories), children after; deletions children first.
    await _upsert(
        session,
        models.KnowledgeSource,
        [
            {
                "key": key,
                **source.model_dump(mode="python"),
                "url": source.url if source.url is not None else models.NO_ADDRESS,
            }
            for key, source in knowledge.sources.items()
        ],
    )
    await _upsert(
        session,
        models.Category,
        [
            {
                "code": category.code,
                "name_ko": category.name_ko,
                "name_en": category.name_en,
                "varies_by_region": category.varies_by_region,
                "document": category.model_dump(mode="json"),
            }
            for category in knowledge.categories
        ],
    )
    await _upsert(
        session,
        models.Item,
        [
            {
                "id": item.id,
                "name_ko": item.name_ko,
                "name_en": item.name_en,
                "synonyms": item.synonyms,
                "parts": [part.model_dump(mode="json") for part in item.parts],
                "sources": item.src,
                "primary_category": item.parts[0].category,
            }
            for item in knowledge.items
        ],
    )
    await _upsert(
        session,
        models.RegionalRule,
        [
            {
                "id": region.id,
                "region_code": region.region_code,
                "region_name": region.region_name,
                "aliases": region.aliases,
                "category_code": region.category,
                "text": region.text,
                "sources": region.src,
                "as_of": region.as_of,
            }
            for region in knowledge.regions
        ],
    )
    await _delete_missing(session, models.Item.id, [item.id for item in knowledge.items])
    await _delete_missing(
        session, models.RegionalRule.id, [region.id for region in knowledge.regions]
    )
    await _delete_missing(
        session, models.Category.code, [category.code for category in knowledge.categories]
    )
    await _delete_missing(session, models.KnowledgeSource.key, list(knowledge.sources))


async def load_from_files(database_url: str) -> LoadResult:
    engine = create_engine(database_url, pool_size=1)
    try:
        return await load_knowledge(create_sessionmaker(engine), read_knowledge_files())
    finally:
        await engine.dispose()


def load_knowledge_command(argv: Sequence[str], database_url: str) -> int:
    result = asyncio.run(load_from_files(database_url))
    state = "loaded" if result.changed else "already up to date"
    print(
        f"knowledge base {result.data_version} {state}: {result.categories} categories, "
        f"{result.items} items, {result.regional_rules} regional rules, "
        f"{result.sources} sources"
    )
    return 0
