"""Launcher: ``python -m export.layer_report ENGINE`` runs apps/layer_report.py (TensorRT engine layer report)."""
import sys

from apps.cli import run_cli
from apps.layer_report import main  # noqa: F401

if __name__ == "__main__":
    sys.exit(run_cli(main))
