"""`python -m ecosort_recycling eval-search [--queries FILE] [--show-misses]`: top-1 accuracy of
item search over a query set (TSV: query, expected category, kind, expected item ids).

Category, strict: the top hit's first (primary) part has the expected category. Lenient: any
part of the top hit does (a greasy pizza box is `paper` and `general`). Item: the top hit is one
of the expected item ids (`a|b` when the reference allows either); rows without ids (a category
name as the query) count for the category only. A row of kind `nfd` is sent decomposed, as a
macOS keyboard may send it: the file keeps the readable composed form.

The index is built by the same constructor as the service's, from the data files the loader puts
in the database, so the ranking, ties included, is the one `GET /items` returns.
"""

from __future__ import annotations

import argparse
import csv
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ecosort_recycling.knowledge_base import CATEGORY_CODES, read_knowledge_files
from ecosort_recycling.search import SearchIndex

EVAL_DIR = Path(__file__).resolve().parents[2] / "eval"
DEFAULT_QUERIES = EVAL_DIR / "queries.tsv"


@dataclass(frozen=True)
class Query:
    text: str  # as sent to the search
    expected: str
    kind: str
    items: tuple[str, ...] = ()


@dataclass(frozen=True)
class Outcome:
    query: Query
    top_id: str | None
    top_categories: tuple[str, ...]

    @property
    def strict(self) -> bool:
        return bool(self.top_categories) and self.top_categories[0] == self.query.expected

    @property
    def lenient(self) -> bool:
        return self.query.expected in self.top_categories

    @property
    def item(self) -> bool | None:
        """Whether the top hit is an expected item; None when the row names no item."""
        return self.top_id in self.query.items if self.query.items else None


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
            items = tuple(i for i in row[3].strip().split("|") if i) if len(row) > 3 else ()
            text = unicodedata.normalize("NFD", row[0]) if kind == "nfd" else row[0]
            queries.append(Query(text, expected, kind, items))
    return queries


def evaluate(index: SearchIndex, queries: Sequence[Query]) -> list[Outcome]:
    known = {item.id for item in index.items}
    outcomes = []
    for query in queries:
        unknown = set(query.items) - known
        if unknown:  # a typo in the set would count as a miss forever
            raise ValueError(f"unknown item ids {sorted(unknown)} for {query.text!r}")
        hits = index.search(query.text, limit=1)
        top = hits[0].item if hits else None
        outcomes.append(
            Outcome(
                query,
                top.id if top else None,
                tuple(top.categories) if top else (),
            )
        )
    return outcomes


def _share(hit: int, total: int) -> str:
    return f"{hit / total:.1%} ({hit}/{total})" if total else "n/a (0/0)"


def report(
    outcomes: Sequence[Outcome], *, show_misses: bool, index: SearchIndex | None = None
) -> str:
    total = len(outcomes)
    strict = sum(o.strict for o in outcomes)
    lenient = sum(o.lenient for o in outcomes)
    named = [o for o in outcomes if o.item is not None]
    lines = [
        f"queries: {total}",
        f"top-1 category accuracy (strict, primary part): {_share(strict, total)}",
        f"top-1 category accuracy (any part of top item): {_share(lenient, total)}",
        f"top-1 item accuracy (rows naming an item):      "
        f"{_share(sum(bool(o.item) for o in named), len(named))}",
    ]
    if index is not None:
        # A query spelled exactly like a name or synonym tests the key list, not the matching.
        keys = {key.plain for key in index.keys}
        verbatim = sum(SearchIndex.clean_query(o.query.text) in keys for o in outcomes)
        lines.append(f"queries equal to a key after normalising:    {_share(verbatim, total)}")
    kinds = Counter(o.query.kind for o in outcomes)
    for kind, count in sorted(kinds.items()):
        of_kind = [o for o in outcomes if o.query.kind == kind]
        items = [o for o in of_kind if o.item is not None]
        lines.append(
            f"  {kind:<11} category {_share(sum(o.strict for o in of_kind), count):<16}"
            f" item {_share(sum(bool(o.item) for o in items), len(items))}"
        )
    if show_misses:
        for o in outcomes:
            if not o.strict or o.item is False:
                lines.append(
                    f"  miss: {o.query.text!r} expected {o.query.expected} "
                    f"{'|'.join(o.query.items)}, got {o.top_id} {list(o.top_categories)}"
                )
    return "\n".join(lines)


def eval_search_command(argv: Sequence[str]) -> int:
    """Print top-1 category and item accuracy of item search over a query set."""
    parser = argparse.ArgumentParser(prog="python -m ecosort_recycling eval-search")
    parser.add_argument("--queries", type=Path, default=DEFAULT_QUERIES)
    parser.add_argument("--show-misses", action="store_true")
    args = parser.parse_args(list(argv))
    index = SearchIndex.from_knowledge(read_knowledge_files())
    outcomes = evaluate(index, read_queries(args.queries))
    print(report(outcomes, show_misses=args.show_misses, index=index))
    return 0
