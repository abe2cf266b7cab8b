"""Launcher: ``python -m models.step_time`` runs apps/step_time.py (one training step's time)."""
import sys

from apps.cli import run_cli
from apps.step_time import main  # noqa: F401

if __name__ == "__main__":
    sys.exit(run_cli(main))
