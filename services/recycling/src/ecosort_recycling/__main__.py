"""`python -m ecosort_recycling migrate|serve|load-knowledge|eval-search`.

`migrate` applies the schema migrations and then loads the knowledge base (idempotent), so the
local stack and the chart's migration job leave a ready database with one command.
"""

import argparse
from collections.abc import Sequence

from ecosort_common.cli import main_for
from ecosort_recycling.config import get_settings
from ecosort_recycling.evaluation import eval_search_command
from ecosort_recycling.loader import load_knowledge_command


def _load_knowledge(argv: Sequence[str]) -> int:
    """Load the knowledge-base data files into the database (idempotent)."""
    argparse.ArgumentParser(
        prog="python -m ecosort_recycling load-knowledge", description=_load_knowledge.__doc__
    ).parse_args(argv)
    return load_knowledge_command(argv, get_settings().database_url)


COMMANDS = {"load-knowledge": _load_knowledge, "eval-search": eval_search_command}


if __name__ == "__main__":
    main_for("ecosort_recycling", get_settings, COMMANDS, after_migrate=lambda: _load_knowledge([]))
