"""`python -m ecosort_locations migrate|serve|import <file>…`.

`migrate` brings the schema up to date and then, when COLLECTION_POINTS_SEED_DIR is set,
imports the public data files found there (each file once, by checksum)."""

import sys

from ecosort_common.cli import run_cli
from ecosort_locations.commands import import_command, seed
from ecosort_locations.config import get_settings


def main() -> int:
    code = run_cli("ecosort_locations", get_settings, {"import": import_command})
    if code == 0 and sys.argv[1:2] == ["migrate"]:
        code = seed(get_settings())
    return code


if __name__ == "__main__":
    sys.exit(main())
