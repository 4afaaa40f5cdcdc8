"""The loader: idempotent, complete, and it removes what the files no longer hold."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from ecosort_common.db import create_engine, create_sessionmaker
from ecosort_recycling import models
from ecosort_recycling.__main__ import _load_knowledge
from ecosort_recycling.catalog import read_catalog
from ecosort_recycling.config import Settings
from ecosort_recycling.knowledge_base import KnowledgeBase, read_knowledge_files
from ecosort_recycling.loader import load_knowledge


async def test_loading_twice_changes_nothing_and_removals_propagate(settings: Settings) -> None:
    engine = create_engine(settings.database_url, pool_size=1)
    sessionmaker = create_sessionmaker(engine)
    knowledge = read_knowledge_files()
    try:
        first = await load_knowledge(sessionmaker, knowledge)
        second = await load_knowledge(sessionmaker, knowledge)
        assert second.changed is False
        assert (first.categories, first.items, first.regional_rules, first.sources) == (
            second.categories,
            second.items,
            second.regional_rules,
            second.sources,
        )
        assert second.categories == 21 and second.items == len(knowledge.items) >= 300

        smaller = KnowledgeBase.model_validate(
            {
                **knowledge.model_dump(mode="json"),
                "items": [
                    i.model_dump(mode="json") for i in knowledge.items if i.id != "pizza-box"
                ],
            }
        )
        shrunk = await load_knowledge(sessionmaker, smaller)
        assert shrunk.changed is True and shrunk.items == second.items - 1
        async with sessionmaker() as session:
            gone = await session.scalar(
                select(func.count()).select_from(models.Item).where(models.Item.id == "pizza-box")
            )
        assert gone == 0
    finally:
        restored = await load_knowledge(sessionmaker, knowledge)
        await engine.dispose()
    assert restored.items == len(knowledge.items)


async def test_the_service_reads_back_exactly_what_the_files_say(settings: Settings) -> None:
    engine = create_engine(settings.database_url, pool_size=1)
    try:
        catalog = await read_catalog(create_sessionmaker(engine))
    finally:
        await engine.dispose()
    assert catalog is not None
    files = read_knowledge_files()
    assert catalog.knowledge.checksum() == files.checksum() == catalog.checksum


async def test_a_source_without_an_address_is_stored_as_older_releases_read_it(
    settings: Settings,
) -> None:
    """Stored as a URI naming no document, not an empty or missing url: the releases before
    this one read every url as a non-empty string, and would serve no knowledge base at all
    from data holding another. The API still says null."""
    engine = create_engine(settings.database_url, pool_size=1)
    sessionmaker = create_sessionmaker(engine)
    knowledge = read_knowledge_files()
    without = sorted(key for key, source in knowledge.sources.items() if source.url is None)
    assert without  # S10, S16
    try:
        await load_knowledge(sessionmaker, knowledge)
        async with sessionmaker() as session:
            rows = await session.execute(
                select(models.KnowledgeSource.key, models.KnowledgeSource.url)
            )
            stored = {key: url for key, url in rows}
        catalog = await read_catalog(sessionmaker)
    finally:
        await engine.dispose()
    assert all(url and url.strip() for url in stored.values()), stored
    assert {key: stored[key] for key in without} == dict.fromkeys(without, models.NO_ADDRESS)
    assert catalog is not None
    assert all(catalog.knowledge.sources[key].url is None for key in without)
    assert catalog.checksum == knowledge.checksum() == catalog.knowledge.checksum()


async def test_an_older_data_version_never_replaces_a_newer_one(settings: Settings) -> None:
    engine = create_engine(settings.database_url, pool_size=1)
    sessionmaker = create_sessionmaker(engine)
    knowledge = read_knowledge_files()
    content = knowledge.model_dump(mode="json")
    without_pizza = [i for i in content["items"] if i["id"] != "pizza-box"]
    older = KnowledgeBase.model_validate(
        {**content, "data_version": "2000.01.01-1", "items": without_pizza}
    )
    newer = KnowledgeBase.model_validate(
        {**content, "data_version": "2999.01.01-1", "items": without_pizza}
    )
    try:
        skipped = await load_knowledge(sessionmaker, older, only_if_newer=True)
        assert skipped.changed is False and skipped.items == len(knowledge.items)
        loaded = await load_knowledge(sessionmaker, newer, only_if_newer=True)
        assert loaded.changed is True and loaded.items == len(knowledge.items) - 1
    finally:
        await load_knowledge(sessionmaker, knowledge)
        await engine.dispose()


def test_load_knowledge_help_describes_the_command_without_loading(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        _load_knowledge(["--help"])
    assert exited.value.code == 0
    assert "Load the knowledge-base data files" in capsys.readouterr().out
