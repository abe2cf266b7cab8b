"""Launcher: ``python export/to_trt.py`` runs apps/to_trt.py (artifacts and TensorRT engines)."""
import sys
from pathlib import Path

if __package__ in (None, ""):          # run as a file: the repository root on the path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from apps.cli import run_cli  # noqa: E402
from apps.to_trt import main  # noqa: E402,F401

if __name__ == "__main__":
    sys.exit(run_cli(main))
