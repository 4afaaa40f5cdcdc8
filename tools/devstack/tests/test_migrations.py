"""`up` skips a service's `migrate` only when it would change nothing, seed files included."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from ecosort_devstack import stack as stack_module
from ecosort_devstack.config import StackConfig
from ecosort_devstack.stack import Stack


@pytest.fixture
def migrating(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Stack, list[str]]:
    """A stack whose databases are all at their head, and the migrate runs it starts."""
    monkeypatch.setattr(stack_module, "is_up_to_date", lambda service, url: True)
    (tmp_path / ".local").mkdir()
    stack = Stack(StackConfig(repo=tmp_path, home=tmp_path / ".local"), say=lambda _: None)
    ran: list[str] = []

    def spawn(name: str, argv: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        ran.append(name)
        return subprocess.Popen(["true"])

    monkeypatch.setattr(stack.group, "spawn", spawn)
    return stack, ran


def test_seed_files_are_imported_when_the_schema_is_already_at_its_head(
    migrating: tuple[Stack, list[str]], tmp_path: Path
) -> None:
    # A first run without ../shared beside the clone (or before new files arrived in it) left
    # locations' database at its head with nothing imported; later runs must still import them.
    stack, ran = migrating
    seed = tmp_path / "collection-points"
    seed.mkdir()
    (seed / "clothing-bins.csv").write_text("a,b\n")
    env = {"DATABASE_URL": "postgresql+psycopg://db/ecosort_locations"}

    stack._migrate("waste", env)
    stack._migrate("locations", env | {"COLLECTION_POINTS_SEED_DIR": str(seed)})
    assert ran == ["locations-migrate"]  # the seed folder was never imported

    stack._migrate("locations", env | {"COLLECTION_POINTS_SEED_DIR": str(seed)})
    assert ran == ["locations-migrate"]  # nothing new: skipped

    (seed / "battery-bins.csv").write_text("a,b\n")
    stack._migrate("locations", env | {"COLLECTION_POINTS_SEED_DIR": str(seed)})
    assert ran == ["locations-migrate", "locations-migrate"]


def test_a_seed_setting_that_names_no_folder_is_left_to_migrate_to_report(
    migrating: tuple[Stack, list[str]], tmp_path: Path
) -> None:
    # COLLECTION_POINTS_SEED_DIR set by hand to a folder that is not there: `migrate` says so in
    # its log (and the launcher shows it), rather than the launcher dying in a traceback.
    stack, ran = migrating
    env = {
        "DATABASE_URL": "postgresql+psycopg://db/ecosort_locations",
        "COLLECTION_POINTS_SEED_DIR": str(tmp_path / "no-such-folder"),
    }
    stack._migrate("locations", env)
    assert ran == ["locations-migrate"]
