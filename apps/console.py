"""Console entry points (setup.cfg): ``nonlocalnet-<command>`` runs the command's ``main`` in apps/."""
from __future__ import annotations

import importlib
import sys

from apps.cli import run_cli

COMMANDS = {
    "quickstart": "apps.quickstart",
    "generate": "apps.generate",
    "train": "apps.train",
    "export-onnx": "apps.to_onnx",
    "export": "apps.to_trt",
    "evaluate": "apps.evaluate",
    "benchmark": "apps.benchmark",
    "profile": "apps.profile",
    "segment": "apps.segment",
    "video-demo": "apps.video_demo",
    "export-triton": "apps.to_triton",
    "serve": "apps.serve",
    "serve-load": "apps.serve_load",
    "layer-report": "apps.layer_report",
}


def _run(command: str) -> None:
    sys.exit(run_cli(importlib.import_module(COMMANDS[command]).main))


def quickstart() -> None: _run("quickstart")          # noqa: E704
def generate() -> None: _run("generate")              # noqa: E704
def train() -> None: _run("train")                    # noqa: E704
def export_onnx() -> None: _run("export-onnx")        # noqa: E704
def export() -> None: _run("export")                  # noqa: E704
def evaluate() -> None: _run("evaluate")              # noqa: E704
def benchmark() -> None: _run("benchmark")            # noqa: E704
def profile() -> None: _run("profile")                # noqa: E704
def segment() -> None: _run("segment")                # noqa: E704
def video_demo() -> None: _run("video-demo")          # noqa: E704
def export_triton() -> None: _run("export-triton")    # noqa: E704
def serve() -> None: _run("serve")                    # noqa: E704
def serve_load() -> None: _run("serve-load")          # noqa: E704
def layer_report() -> None: _run("layer-report")      # noqa: E704
