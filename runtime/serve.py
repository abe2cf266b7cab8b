"""Launcher: ``python -m runtime.serve`` runs apps/serve.py (the Triton server)."""
import sys

from apps.cli import run_cli
from apps.serve import main  # noqa: F401

if __name__ == "__main__":
    sys.exit(run_cli(main))
