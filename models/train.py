"""Launcher: ``python -m models.train`` runs apps/train.py (training; the library is models/trainer.py)."""
import sys

from apps.cli import run_cli
from apps.train import main  # noqa: F401

if __name__ == "__main__":
    sys.exit(run_cli(main))
