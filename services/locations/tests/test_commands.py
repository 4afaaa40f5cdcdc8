"""The `import` and seeding commands: a bad file is reported by name and the others still go
in; a file's type from its name, or a refusal when the name says two."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from ecosort_locations import commands
from ecosort_locations.config import Settings
from ecosort_locations.point_types import AmbiguousFileName, type_from_file_name

GOOD = "연번,도로명주소,위도,경도,데이터기준일자\n1,서울특별시 오류구 정상로 1,35.21,128.01,44911\n"
BAD = "이름,전화\n가,010\n"


@pytest.fixture
def cli_settings(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The commands with the tests' database, logging where the tests' logging goes (set up
    again, it would print to the output capsys replaces per test)."""
    monkeypatch.setattr(commands, "get_settings", lambda: settings)
    monkeypatch.setattr(commands, "configure_logging", lambda *args, **kwargs: None)
    return settings


def test_the_cli_reports_a_bad_file_by_name_and_imports_the_others(
    cli_settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "a_medicine.csv").write_text(GOOD)
    (tmp_path / "b_medicine.csv").write_text(BAD)
    (tmp_path / "c_medicine.csv").write_text(GOOD.replace("오류구", "다른구"))
    names = ["a_medicine.csv", "b_medicine.csv", "c_medicine.csv", "missing_medicine.csv"]
    with capture_logs():  # the reports alone on stdout
        code = commands.import_command([str(tmp_path / name) for name in names])
    out, err = capsys.readouterr()
    assert code == 1
    reports = {report["file"]: report for report in json.loads(out)}
    assert reports["a_medicine.csv"]["counts"]["imported"] == 1
    assert reports["c_medicine.csv"]["counts"]["imported"] == 1
    assert reports["b_medicine.csv"]["error"].startswith("Unknown CSV header")
    assert "import failed: b_medicine.csv: Unknown CSV header" in err
    assert "import failed: missing_medicine.csv: No such file or directory" in err


def test_seeding_logs_a_bad_file_and_carries_on_without_failing_the_start(
    cli_settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "a_broken_medicine.csv").write_text(BAD)
    (tmp_path / "b_폐형광등_폐건전지.csv").write_text(GOOD)
    (tmp_path / "c_medicine.csv").write_text(GOOD.replace("오류구", "씨앗구"))
    seeding = cli_settings.model_copy(update={"collection_points_seed_dir": tmp_path})
    with capture_logs() as logs:
        code = commands.seed(seeding)
    assert code == 0
    reports = {report["file"]: report for report in json.loads(capsys.readouterr().out)}
    assert reports["c_medicine.csv"]["counts"]["imported"] == 1
    assert reports["a_broken_medicine.csv"]["error"].startswith("Unknown CSV header")
    assert "more than one kind" in reports["b_폐형광등_폐건전지.csv"]["error"]
    failed = [e for e in logs if e["event"] == "collection_points_import_failed"]
    assert {(e["log_level"], e["file"]) for e in failed} == {
        ("error", "a_broken_medicine.csv"),
        ("error", "b_폐형광등_폐건전지.csv"),
    }


@pytest.mark.parametrize(
    ("name", "point_type"),
    [
        ("폐의약품수거함_전지역.csv", "medicine"),  # 전지역: every area, no battery
        ("생활안전지도_폐의약품수거함.csv", "medicine"),  # 안전지도: a safety map
        ("폐건전지_수거함.csv", "battery"),
        ("폐전지수거함.json", "battery"),
        ("Battery_bins.csv", "battery"),
        ("의류수거함.csv", "clothing"),
        ("notes.csv", None),
    ],
)
def test_the_type_comes_from_the_name(name: str, point_type: str | None) -> None:
    assert type_from_file_name(name) == point_type


def test_a_name_naming_two_types_needs_type_said(
    cli_settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(AmbiguousFileName, match="battery, lamp"):
        type_from_file_name("폐형광등_폐건전지.csv")
    both = tmp_path / "폐형광등_폐건전지.csv"
    both.write_text(GOOD.replace("오류구", "두종류구"))
    with pytest.raises(SystemExit, match="say which with --type"):
        commands.import_command([str(both)])
    with capture_logs():
        assert commands.import_command([str(both), "--type", "lamp"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["type"] == "lamp"
