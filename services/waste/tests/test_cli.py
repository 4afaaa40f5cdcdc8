"""`python -m ecosort_waste train-head --help` shows the command's own options."""

import subprocess
import sys


def test_train_head_help_shows_its_options() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ecosort_waste", "train-head", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "--no-corrections" in done.stdout
    assert "--limit-per-class" in done.stdout
