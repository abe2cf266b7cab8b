"""Shared test set-up: repo root on sys.path, deterministic small-thread torch."""
from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_NUM_THREADS", "2")
# Busy-waiting OpenMP threads make PyTorch on the main thread crawl when other threads compete
# (measured ~100x slower per tile under load); must be set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# tests/py38 is the separate Python 3.8 / 3.10 (Jetson) job of .ci/run, on prebuilt artifacts.
collect_ignore = [] if os.environ.get("NONLOCALNET_PY38_DIR") else ["py38"]
