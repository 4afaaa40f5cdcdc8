"""`python -m ecosort_waste migrate|serve|train-head`."""

from ecosort_common.cli import main_for
from ecosort_waste.config import get_settings
from ecosort_waste.retrain import train_head_command

if __name__ == "__main__":
    main_for("ecosort_waste", get_settings, {"train-head": train_head_command})
