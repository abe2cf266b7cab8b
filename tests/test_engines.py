"""export/engines.py without TensorRT: which artifact each precision request builds from, per route
(strongly typed TensorRT 10/11 vs builder flags on 8.x), and the command printed for the target."""
from __future__ import annotations

import argparse
from pathlib import Path
from types import SimpleNamespace

import pytest

ROLES = ("fp32", "fp16", "int8-trt", "int8-ort", "int8-fp16")


def _artifacts():
    return [SimpleNamespace(role=r, path=Path(f"out/m_{r}.onnx")) for r in ROLES]


@pytest.mark.parametrize("fp16, int8, implicit, strongly_typed, role, best", [
    (False, False, False, True, "fp32", False),
    (True, False, False, True, "fp16", False),
    (False, True, False, True, "int8-fp16", False),     # 10/11: the strongly typed file (opset 19, FP16 scales)
    (False, True, False, False, "int8-trt", False),     # 8.x: the FP32-scale file, INT8+FP16 flags (the plan)
    (True, True, False, True, "int8-fp16", False),      # --fp16 adds nothing to INT8: float layers are FP16
    (True, True, False, False, "int8-trt", False),
    (False, True, True, False, "fp32", False),          # implicit INT8 calibrates the FP32 file
    (True, True, True, False, "fp32", True),            # ... with FP16 for the layers it leaves float
])
def test_engine_source_per_route(fp16, int8, implicit, strongly_typed, role, best):
    from export.engines import engine_source

    art, got_best = engine_source(_artifacts(), fp16, int8, implicit, strongly_typed)
    assert (art.role, got_best) == (role, best)


def test_engine_tag_names_what_the_engine_computes():
    from export.engines import _tag

    assert _tag("int8-fp16", False) == _tag("int8-trt", False) == "int8"
    assert _tag("fp32", True) == "int8-implicit" and _tag("fp16", False) == "fp16" and _tag("fp32", False) is None


def test_target_command_for_int8_names_both_routes():
    from export.engines import target_command

    args = argparse.Namespace(fp16=False, int8=True, int8_implicit=False, workspace=None, timing_cache=None)
    text = target_command(args, _artifacts())
    assert text.startswith("python export/to_trt.py --onnx out/m_int8-fp16.onnx --backend tensorrt")
    assert "TensorRT 8.x" in text and "--onnx out/m_int8-trt.onnx" in text
    args.fp16 = True
    assert target_command(args, _artifacts()) == text
