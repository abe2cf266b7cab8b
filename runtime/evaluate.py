"""Launcher: ``python -m runtime.evaluate`` runs apps/evaluate.py (the accuracy gate)."""
import sys

from apps.cli import run_cli
from apps.evaluate import main  # noqa: F401

if __name__ == "__main__":
    sys.exit(run_cli(main))
