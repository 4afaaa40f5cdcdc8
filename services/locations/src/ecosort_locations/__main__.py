"""`python -m ecosort_locations migrate|serve`."""

from ecosort_common.cli import main_for

from ecosort_locations.config import get_settings

if __name__ == "__main__":
    main_for("ecosort_locations", get_settings, {})
