"""Launcher: ``python -m runtime.serve_load`` runs apps/serve_load.py (a Triton load test)."""
import sys

from apps.cli import run_cli
from apps.serve_load import main  # noqa: F401

if __name__ == "__main__":
    sys.exit(run_cli(main))
