"""`python -m ecosort_auth migrate|serve|rotate-keys`."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Sequence

from ecosort_auth.config import get_settings
from ecosort_auth.keys import rotate_keys
from ecosort_common.cli import main_for
from ecosort_common.db import create_engine, create_sessionmaker


async def _rotate() -> str:
    settings = get_settings()
    engine = create_engine(settings.database_url, pool_size=1)
    try:
        async with create_sessionmaker(engine)() as db, db.begin():
            return await rotate_keys(db, settings.key_encryption_key)
    finally:
        await engine.dispose()


def rotate_keys_command(argv: Sequence[str]) -> int:
    """Rotate the token signing key; tokens signed with the old key stay valid until they expire."""
    argparse.ArgumentParser(
        prog="python -m ecosort_auth rotate-keys", description=rotate_keys_command.__doc__
    ).parse_args(argv)
    kid = asyncio.run(_rotate())
    print(f"new signing key: {kid}")
    return 0


if __name__ == "__main__":
    main_for("ecosort_auth", get_settings, {"rotate-keys": rotate_keys_command})
