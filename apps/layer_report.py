"""``python -m export.layer_report ENGINE``: which layers of a built TensorRT engine run INT8
(export/engine_layers.py has the reading and the verdicts; see its docstring)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Sequence

from export.engine_layers import format_report, report_for


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m export.layer_report", description=__doc__.split("\n")[0])
    ap.add_argument("engine", help="a TensorRT engine built with detailed profiling verbosity (export/to_trt.py), "
                                   "or trtexec's --exportLayerInfo JSON")
    ap.add_argument("--onnx", help="the ONNX the engine was built from (default: the sidecar's, beside the engine)")
    ap.add_argument("--json", metavar="OUT", help="also write the report as JSON")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    """0 nothing flagged, 1 something flagged (run_cli: 2 and one ``error:`` line on a user error)."""
    args = build_parser().parse_args(argv)
    report = report_for(Path(args.engine), Path(args.onnx) if args.onnx else None)
    print(format_report(report))
    if args.json:
        from runtime.fileio import atomic_open

        with atomic_open(args.json, "w") as f:
            json.dump(report.to_dict(), f, indent=1)
    return report.exit_code
