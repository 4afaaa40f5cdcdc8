"""`python -m ecosort_users migrate|serve`."""

from ecosort_common.cli import main_for
from ecosort_users.config import get_settings

if __name__ == "__main__":
    main_for("ecosort_users", get_settings, {})
