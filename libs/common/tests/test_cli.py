"""`python -m ecosort_<svc> <command> …`: a service's own command receives everything after its
name, `--help` included, so its own parser answers and shows the command's real options."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import pytest

from ecosort_common import cli
from ecosort_common.cli import run_cli
from ecosort_common.settings import ServiceSettings


def _train(argv: Sequence[str]) -> int:
    """train something"""
    parser = argparse.ArgumentParser(prog="python -m ecosort_demo train")
    parser.add_argument("--no-corrections", action="store_true")
    parser.add_argument("--limit-per-class", type=int)
    args = parser.parse_args(argv)
    return 3 if args.no_corrections and args.limit_per_class == 2 else 4


def _run(argv: list[str]) -> int:
    return run_cli("ecosort_demo", ServiceSettings, {"train": _train}, argv)


def test_help_after_a_command_is_the_commands_own(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        _run(["train", "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert "python -m ecosort_demo train" in out
    assert "--no-corrections" in out
    assert "--limit-per-class" in out


def test_a_commands_options_still_reach_it() -> None:
    assert _run(["train", "--no-corrections", "--limit-per-class", "2"]) == 3
    assert _run(["train"]) == 4


def test_top_level_help_lists_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        _run(["--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert "train something" in out
    assert "migrate" in out


def test_after_migrate_runs_once_the_schema_is_up_and_gives_the_exit_status(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    done: list[str] = []
    monkeypatch.setattr(cli, "upgrade", lambda package, url: done.append("upgrade"))

    def seed() -> int:
        done.append("seed")
        return 5

    assert run_cli("ecosort_demo", ServiceSettings, {}, ["migrate"], after_migrate=seed) == 5
    assert done == ["upgrade", "seed"]
    assert _run(["train"]) == 4 and done == ["upgrade", "seed"]  # only after `migrate`
