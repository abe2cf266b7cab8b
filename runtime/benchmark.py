"""Launcher: ``python -m runtime.benchmark`` runs apps/benchmark.py (runtime latency)."""
import sys

from apps.cli import run_cli
from apps.benchmark import main  # noqa: F401

if __name__ == "__main__":
    sys.exit(run_cli(main))
