"""Launcher: ``python -m samples.generate`` runs apps/generate.py (the synthetic sample set)."""
import sys

from apps.cli import run_cli
from apps.generate import main  # noqa: F401

if __name__ == "__main__":
    sys.exit(run_cli(main))
