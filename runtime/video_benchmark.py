"""Launcher: ``python -m runtime.video_benchmark`` runs apps/video_benchmark.py (the video pipeline benchmark)."""
import sys

from apps.cli import run_cli
from apps.video_benchmark import main  # noqa: F401

if __name__ == "__main__":
    sys.exit(run_cli(main))
