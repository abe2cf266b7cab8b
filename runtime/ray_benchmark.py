"""Launcher: ``python -m runtime.ray_benchmark`` runs apps/ray_benchmark.py (1-vs-N actor scaling)."""
import sys

from apps.cli import run_cli
from apps.ray_benchmark import main  # noqa: F401

if __name__ == "__main__":
    sys.exit(run_cli(main))
