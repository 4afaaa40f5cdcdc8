"""Hangul keys and forgiving search, over the real item list (no database needed)."""

from __future__ import annotations

import time

import pytest

from ecosort_recycling.evaluation import DEFAULT_QUERIES, evaluate, read_queries
from ecosort_recycling.hangul import choseong, is_choseong_query, keystrokes, normalize, sound_key
from ecosort_recycling.knowledge_base import read_knowledge_files
from ecosort_recycling.search import SearchIndex

INDEX = SearchIndex(read_knowledge_files().items)


def top_category(query: str) -> str | None:
    hits = INDEX.search(query, limit=1)
    return hits[0].item.parts[0].category if hits else None


def test_hangul_keys() -> None:
    assert normalize(" 우유 · 팩 ") == "우유팩"
    assert normalize("ＰＥＴ 병") == "pet병"
    assert normalize("ㅍㅌㅂ") == "ㅍㅌㅂ"  # typed jamo survive width folding
    assert choseong("페트병") == "ㅍㅌㅂ"
    assert keystrokes("왜") == "ㅇㅗㅐ"
    assert keystrokes("보조배ㅌ").startswith("ㅂㅗㅈㅗㅂㅐ")
    assert sound_key("빠떼") == sound_key("바테") == sound_key("바떼")
    assert sound_key("배") == sound_key("베")
    assert is_choseong_query("ㅍㅌㅂ") and not is_choseong_query("페트ㅂ")


@pytest.mark.parametrize(
    ("query", "category"),
    [
        ("우유 팩", "paper_pack"),  # spacing
        ("택 배 박 스", "paper"),
        ("보조베터리", "battery"),  # typo
        ("스치로폼", "styrofoam"),
        ("ㅍㅌㅂ", "pet_clear"),  # 초성
        ("ㅂㅈㅂㅌㄹ", "battery"),
        ("뽁뽁이", "vinyl"),  # synonym / colloquial
        ("아이스팩", "general"),
        ("영수증", "general"),
        ("치킨뼈", "general"),
        ("귤껍질", "food"),
        ("다 쓴 건전지 어떻게 버려요", "battery"),  # the thing inside a sentence
        ("형광등 깨진거", "nonburnable"),  # words in any order
    ],
)
def test_forgiving_search(query: str, category: str) -> None:
    assert top_category(query) == category


def test_exact_name_ranks_first_and_results_are_ordered() -> None:
    hits = INDEX.search("페트병", limit=5)
    assert hits[0].item.id == "clear-pet-bottle" and hits[0].how == "exact"
    scores = [hit.score for hit in hits]
    assert scores == sorted(scores, reverse=True)


def test_nonsense_finds_nothing_rather_than_anything() -> None:
    assert INDEX.search("qzxv") == []
    assert INDEX.search("   ") == []


def test_query_set_top1_accuracy_meets_the_goal() -> None:
    outcomes = evaluate(INDEX, read_queries(DEFAULT_QUERIES))
    assert len(outcomes) >= 200
    accuracy = sum(o.strict for o in outcomes) / len(outcomes)
    assert accuracy >= 0.95, f"top-1 accuracy {accuracy:.1%}"


def test_a_search_over_the_whole_list_is_cheap() -> None:
    # CPU time, not wall time: the machine is shared, the cost of our code is what we check.
    queries = ["보조베터리", "ㅍㅌㅂ", "기름 묻은 피자박스", "스치로폼", "우유 팩"] * 20
    start = time.process_time()
    for query in queries:
        INDEX.search(query)
    per_query_ms = (time.process_time() - start) * 1000 / len(queries)
    assert per_query_ms < 20, f"{per_query_ms:.2f} ms CPU per query"
