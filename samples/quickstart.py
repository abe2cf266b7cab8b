"""Launcher: ``python -m samples.quickstart`` runs apps/quickstart.py (the end-to-end quickstart)."""
import sys

from apps.cli import run_cli
from apps.quickstart import main  # noqa: F401

if __name__ == "__main__":
    sys.exit(run_cli(main))
