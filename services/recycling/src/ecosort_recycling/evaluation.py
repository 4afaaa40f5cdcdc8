"""`python -m ecosort_recycling eval-search [--queries FILE] [--show-misses]`: top-1 category
accuracy of item search over a query set (TSV: query, expected category, kind).

Strict: the top hit's first (primary) part has the expected category. Lenient: any part of the
top hit does (a greasy pizza box is `paper` and `general`). The index is built from the data
files, the same items the loader puts in the database and the service indexes at start-up.
"""

from __future__ import annotations

import argparse
import csv
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ecosort_recycling.knowledge_base import CATEGORY_CODES, read_knowledge_files
from ecosort_recycling.search import SearchIndex

DEFAULT_QUERIES = Path(__file__).resolve().parents[2] / "eval" / "queries.tsv"


@dataclass(frozen=True)
class Query:
    text: str
    expected: str
    kind: str


@dataclass(frozen=True)
class Outcome:
    query: Query
    top_name: str | None
    top_categories: tuple[str, ...]

    @property
    def strict(self) -> bool:
        return bool(self.top_categories) and self.top_categories[0] == self.query.expected

    @property
    def lenient(self) -> bool:
        return self.query.expected in self.top_categories


def read_queries(path: Path) -> list[Query]:
    queries = []
    with path.open(encoding="utf-8", newline="") as handle:
        for row in csv.reader(handle, delimiter="\t"):
            if not row or row[0].startswith("#") or not row[0].strip():
                continue
            expected = row[1].strip()
            if expected not in CATEGORY_CODES:
                raise ValueError(f"{path}: unknown category {expected!r} for {row[0]!r}")
            kind = row[2].strip() if len(row) > 2 else "other"
            queries.append(Query(row[0], expected, kind))
    return queries


def evaluate(index: SearchIndex, queries: Sequence[Query]) -> list[Outcome]:
    outcomes = []
    for query in queries:
        hits = index.search(query.text, limit=1)
        top = hits[0].item if hits else None
        outcomes.append(
            Outcome(
                query,
                top.name_ko if top else None,
                tuple(top.categories) if top else (),
            )
        )
    return outcomes


def report(outcomes: Sequence[Outcome], *, show_misses: bool) -> str:
    total = len(outcomes)
    strict = sum(o.strict for o in outcomes)
    lenient = sum(o.lenient for o in outcomes)
    lines = [
        f"queries: {total}",
        f"top-1 category accuracy (strict, primary part): {strict / total:.1%} ({strict}/{total})",
        f"top-1 category accuracy (any part of top item): {lenient / total:.1%} "
        f"({lenient}/{total})",
    ]
    kinds = Counter(o.query.kind for o in outcomes)
    for kind, count in sorted(kinds.items()):
        hit = sum(o.strict for o in outcomes if o.query.kind == kind)
        lines.append(f"  {kind:<11} {hit / count:6.1%} ({hit}/{count})")
    if show_misses:
        for o in outcomes:
            if not o.strict:
                lines.append(
                    f"  miss: {o.query.text!r} expected {o.query.expected}, "
                    f"got {o.top_name} {list(o.top_categories)}"
                )
    return "\n".join(lines)


def eval_search_command(argv: Sequence[str]) -> int:
    """Print top-1 category accuracy of item search over the query set."""
    parser = argparse.ArgumentParser(prog="python -m ecosort_recycling eval-search")
    parser.add_argument("--queries", type=Path, default=DEFAULT_QUERIES)
    parser.add_argument("--show-misses", action="store_true")
    args = parser.parse_args(list(argv))
    index = SearchIndex(read_knowledge_files().items)
    outcomes = evaluate(index, read_queries(args.queries))
    print(report(outcomes, show_misses=args.show_misses))
    return 0
