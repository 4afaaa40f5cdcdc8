"""The service's own commands: `import <file>` and the seeding `migrate` runs when
COLLECTION_POINTS_SEED_DIR is set."""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import structlog
from sqlalchemy import text

from ecosort_common.db import create_engine, create_sessionmaker
from ecosort_common.logging import configure_logging
from ecosort_locations.config import Settings, get_settings
from ecosort_locations.importer.load import already_imported, import_file
from ecosort_locations.importer.readers import UnknownLayout
from ecosort_locations.kakao import KakaoLocalClient
from ecosort_locations.point_types import POINT_TYPES, AmbiguousFileName, type_from_file_name

SEED_SUFFIXES = (".csv", ".json")
log = structlog.get_logger("ecosort.locations.import")


def _failure(file_name: str, exc: Exception) -> dict[str, object]:
    """The report of a file that could not be imported, logged as an error. Data errors (the
    file's own fault) need no traceback; anything else may be ours, so it keeps one."""
    expected = isinstance(exc, (UnknownLayout, AmbiguousFileName, OSError))
    error = str(exc) if not isinstance(exc, OSError) else exc.strerror or str(exc)
    log.error("collection_points_import_failed", file=file_name, error=error, exc_info=not expected)
    return {"file": file_name, "error": error}


def _geocoder(settings: Settings) -> KakaoLocalClient | None:
    if settings.kakao_rest_api_key is None:
        return None
    return KakaoLocalClient(
        settings.kakao_rest_api_key.get_secret_value(),
        base_url=settings.kakao_local_base_url,
        timeout=settings.kakao_timeout_seconds,
    )


_ONE_IMPORT_AT_A_TIME = text(
    "SELECT pg_advisory_xact_lock(hashtextextended('locations:import', 0))"
)


async def import_files(
    settings: Settings, files: Sequence[tuple[str, bytes, str]], *, skip_known: bool
) -> list[dict[str, object]]:
    """Import each (file, type) in its own transaction; with skip_known, files whose checksum
    was imported before are left alone (what makes seeding at every start cheap)."""
    engine = create_engine(settings.database_url, pool_size=2)
    sessionmaker = create_sessionmaker(engine)
    geocoder = _geocoder(settings)
    reports: list[dict[str, object]] = []
    try:
        for file_name, data, point_type in files:
            try:
                async with sessionmaker() as session, session.begin():
                    # One import at a time: a second seeding (two `migrate` runs together) then
                    # finds the file imported instead of importing it, and geocoding, again.
                    await session.execute(_ONE_IMPORT_AT_A_TIME)
                    digest = hashlib.sha256(data).hexdigest()
                    if skip_known and await already_imported(
                        session, digest, point_type, can_geocode=geocoder is not None
                    ):
                        reports.append({"file": file_name, "skipped": "already imported"})
                        continue
                    report = await import_file(
                        session,
                        file_name,
                        data,
                        point_type,
                        geocoder=geocoder,
                        geocode_concurrency=settings.geocode_concurrency,
                    )
                    reports.append(report.as_json())
            except Exception as exc:  # its transaction is rolled back; the next files still count
                reports.append(_failure(file_name, exc))
    finally:
        if geocoder is not None:
            await geocoder.aclose()
        await engine.dispose()
    return reports


def _type_of(path: Path, given: str | None) -> str:
    try:
        point_type = given or type_from_file_name(path.name)
    except AmbiguousFileName as exc:
        raise SystemExit(str(exc)) from exc
    if point_type is None:
        raise SystemExit(f"{path.name}: say what it lists with --type ({', '.join(POINT_TYPES)})")
    return point_type


def import_command(argv: Sequence[str]) -> int:
    """import public collection-point files (CSV/JSON); a file replaces its earlier version"""
    parser = argparse.ArgumentParser(prog="python -m ecosort_locations import")
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--type", choices=sorted(POINT_TYPES), help="default: from the file name")
    args = parser.parse_args(argv)
    settings = get_settings()
    configure_logging(settings.log_level, json=settings.log_json)
    # Every file's type first: a name that says none (or two) stops the import before it starts.
    typed = [(path, _type_of(path, args.type)) for path in args.files]
    files, reports = [], []
    for path, point_type in typed:
        try:
            files.append((path.name, path.read_bytes(), point_type))
        except OSError as exc:
            reports.append(_failure(path.name, exc))
    reports += asyncio.run(import_files(settings, files, skip_known=False))
    print(json.dumps(reports, ensure_ascii=False, indent=2))
    failed = [report for report in reports if "error" in report]
    for report in failed:
        print(f"import failed: {report['file']}: {report['error']}", file=sys.stderr)
    return 1 if failed else 0


def seed_files(seed_dir: Path) -> tuple[list[tuple[str, bytes, str]], list[dict[str, object]]]:
    """The seed folder's data files whose names say what they list (others are left out), and
    the reports of those that cannot be read or whose names say two kinds."""
    files, failures = [], []
    for path in sorted(p for p in seed_dir.iterdir() if p.suffix.lower() in SEED_SUFFIXES):
        try:
            point_type = type_from_file_name(path.name)
            if point_type is not None:
                files.append((path.name, path.read_bytes(), point_type))
        except (AmbiguousFileName, OSError) as exc:
            failures.append(_failure(path.name, exc))
    return files, failures


def seed(settings: Settings) -> int:
    """Import the files of COLLECTION_POINTS_SEED_DIR that were not imported before. A file
    that fails is logged as an error and left out, never a failed start: the schema is up to
    date, and the other files (and the service) are fine without it."""
    seed_dir = settings.collection_points_seed_dir
    if seed_dir is None:
        return 0
    if not seed_dir.is_dir():
        print(f"COLLECTION_POINTS_SEED_DIR={seed_dir} is not a folder", file=sys.stderr)
        return 1
    configure_logging(settings.log_level, json=settings.log_json)
    files, reports = seed_files(seed_dir)
    reports += asyncio.run(import_files(settings, files, skip_known=True))
    print(json.dumps(reports, ensure_ascii=False))
    return 0
