"""Launcher: ``python -m runtime.profile`` runs apps/profile.py (ONNX Runtime kernel profile)."""
import sys

from apps.cli import run_cli
from apps.profile import main  # noqa: F401

if __name__ == "__main__":
    sys.exit(run_cli(main))
