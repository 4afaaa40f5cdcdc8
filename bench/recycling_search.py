"""Latency of recycling item search over the whole item list.

    uv run --frozen python bench/recycling_search.py [--rounds 3] [--url http://127.0.0.1:8104]

The query mix: the evaluation set (spacing, typos, 초성, synonyms, phrases) plus, for every item,
its name, its name with one letter mistyped, and its 초성 — about 1,200 queries, each run
`--rounds` times after a warm-up pass. In-process figures are the search itself (what the
service does per request); wall time includes whatever else the shared machine is doing, CPU
time (this thread only) is the cost of our code. `--url` also times GET
/api/v1/recycling/items over HTTP against a running service (sequential, one connection).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence

import httpx
import machine

from ecosort_recycling.evaluation import DEFAULT_QUERIES, read_queries
from ecosort_recycling.hangul import JUNGSEONG, SYLLABLE_FIRST, choseong, normalize
from ecosort_recycling.knowledge_base import Item, read_knowledge_files
from ecosort_recycling.search import SearchIndex


def mistype(word: str) -> str:
    """The word with the vowel of its last syllable shifted by one (배→뱌): a plausible typo."""
    for position in range(len(word) - 1, -1, -1):
        code = ord(word[position]) - SYLLABLE_FIRST
        if 0 <= code <= 11171:
            vowel = (code % 588) // 28
            shifted = code + ((1 if vowel + 1 < len(JUNGSEONG) else -1) * 28)
            return word[:position] + chr(SYLLABLE_FIRST + shifted) + word[position + 1 :]
    return word + "ㅋ"


def query_mix(items: Sequence[Item]) -> list[str]:
    queries = [query.text for query in read_queries(DEFAULT_QUERIES)]
    for item in items:
        queries += [item.name_ko, mistype(item.name_ko), choseong(normalize(item.name_ko))]
    return queries


def percentiles(samples_ms: Sequence[float]) -> str:
    ordered = sorted(samples_ms)

    def at(share: float) -> float:
        return ordered[min(len(ordered) - 1, int(share * len(ordered)))]

    return (
        f"n={len(ordered):5d}  mean {statistics.fmean(ordered):6.3f}  p50 {at(0.50):6.3f}  "
        f"p95 {at(0.95):6.3f}  p99 {at(0.99):6.3f}  max {ordered[-1]:7.3f}  (ms)"
    )


def time_calls(call: Callable[[str], object], queries: Sequence[str], rounds: int) -> tuple:
    for query in queries:  # warm-up
        call(query)
    wall: list[float] = []
    cpu: list[float] = []
    for _ in range(rounds):
        for query in queries:
            start_wall, start_cpu = time.perf_counter_ns(), time.thread_time_ns()
            call(query)
            cpu.append((time.thread_time_ns() - start_cpu) / 1e6)
            wall.append((time.perf_counter_ns() - start_wall) / 1e6)
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--url", help="also time a running service, e.g. http://127.0.0.1:8104")
    args = parser.parse_args()

    knowledge = read_knowledge_files()
    index = SearchIndex.from_knowledge(knowledge)
    queries = query_mix(knowledge.items)
    print(
        f"{machine.describe()}; "
        f"{len(index)} items, {len(index.keys)} search keys, {len(queries)} queries "
        f"x {args.rounds} rounds"
    )
    wall, cpu = time_calls(lambda q: index.search(q, limit=10), queries, args.rounds)
    print(f"in-process search, wall: {percentiles(wall)}")
    print(f"in-process search, CPU : {percentiles(cpu)}")

    if args.url:
        with httpx.Client(base_url=args.url, timeout=10) as http:

            def get(query: str) -> object:
                response = http.get("/api/v1/recycling/items", params={"q": query})
                response.raise_for_status()
                return response

            http_wall, _ = time_calls(get, queries, 1)
        print(f"HTTP GET /items, wall  : {percentiles(http_wall)}")


if __name__ == "__main__":
    main()
