"""The command line every service shares: `python -m ecosort_<svc> migrate|serve|<own commands>`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping, Sequence

import uvicorn

from ecosort_common.migrations import upgrade
from ecosort_common.settings import ServiceSettings

Command = Callable[[Sequence[str]], int | None]


def run_cli(
    package: str,
    settings_factory: Callable[[], ServiceSettings],
    commands: Mapping[str, Command] | None = None,
    argv: Sequence[str] | None = None,
    *,
    after_migrate: Callable[[], int] | None = None,
) -> int:
    """Run one command; `after_migrate`, when given, runs once `migrate` has brought the schema
    up to date (a service's data step: recycling's knowledge base, locations' seed files), and
    its exit status is the command's."""
    commands = commands or {}
    parser = argparse.ArgumentParser(prog=f"python -m {package}")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("migrate", help="apply this service's database migrations")
    serve = sub.add_parser("serve", help="run the HTTP API with uvicorn")
    serve.add_argument("--host", default="0.0.0.0")
    serve.add_argument("--port", type=int, default=8000)
    for name, func in commands.items():
        # No -h of its own: `<command> --help` goes, with the rest of the line, to the
        # command's parser (every command parses its arguments), which lists its real options.
        sub.add_parser(
            name, help=(func.__doc__ or "").strip().split("\n")[0] or None, add_help=False
        )
    args, rest = parser.parse_known_args(argv)
    if args.command == "migrate":
        upgrade(package, settings_factory().database_url)
        return after_migrate() if after_migrate is not None else 0
    if args.command == "serve":
        uvicorn.run(
            f"{package}.main:app",
            host=args.host,
            port=args.port,
            proxy_headers=True,
            access_log=False,
        )
        return 0
    return commands[args.command](rest) or 0


def main_for(
    package: str,
    settings_factory: Callable[[], ServiceSettings],
    commands: Mapping[str, Command],
    *,
    after_migrate: Callable[[], int] | None = None,
) -> None:
    sys.exit(run_cli(package, settings_factory, commands, after_migrate=after_migrate))
