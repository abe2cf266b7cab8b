"""Launcher: ``python -m runtime.segment`` runs apps/segment.py (batch segmentation)."""
import sys

from apps.cli import run_cli
from apps.segment import main  # noqa: F401

if __name__ == "__main__":
    sys.exit(run_cli(main))
