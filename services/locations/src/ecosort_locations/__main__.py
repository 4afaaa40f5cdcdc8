"""`python -m ecosort_locations migrate|serve|import <file>…`.

`migrate` brings the schema up to date and then, when COLLECTION_POINTS_SEED_DIR is set,
imports the public data files found there (each file once, by checksum)."""

from ecosort_common.cli import main_for
from ecosort_locations.commands import import_command, seed
from ecosort_locations.config import get_settings

if __name__ == "__main__":
    main_for(
        "ecosort_locations",
        get_settings,
        {"import": import_command},
        after_migrate=lambda: seed(get_settings()),
    )
