"""Loading artifacts where only ONNX Runtime (or only TensorRT) exists, as on a Jetson:
metadata read without the ``onnx`` package, ONNX Runtime's TensorRT provider options per artifact
(INT8 / FP16 flags, timing cache), and load errors that say what ONNX Runtime said."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest

from runtime.artifact import ArtifactMeta
from runtime.errors import ToolkitError

TRT, CUDA, CPU = "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"


def small_artifact(path: Path, precision: str = "fp32", layout: str = "", extra_props: int = 0) -> Path:
    """A 1-node ONNX file (Identity, 1x3x8x8) carrying toolkit metadata."""
    import onnx
    from onnx import TensorProto, helper

    from export.exporter import write_meta

    io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 3, 8, 8]) for n in ("input", "logits")]
    graph = helper.make_graph([helper.make_node("Identity", ["input"], ["logits"])], "g", io[:1], io[1:])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    for i in range(extra_props):
        entry = model.metadata_props.add()
        entry.key, entry.value = f"k{i}", "v" * (i * 50)
    meta = ArtifactMeta("tiny_cityscapes", 3, ("a", "b", "c"), ((0, 0, 0),) * 3, (8, 8), (0.0,) * 3, (1.0,) * 3,
                        precision=precision, layout=layout, output_name="logits")
    write_meta(model, meta)
    onnx.save(model, str(path))
    return path


def test_metadata_read_matches_onnx_and_needs_no_onnx(tmp_path, monkeypatch):
    import onnx

    from runtime.artifact import read_metadata_props, read_onnx_meta

    path = small_artifact(tmp_path / "m.onnx", "int8", "trt+fp16", extra_props=3)
    expected = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    monkeypatch.setitem(sys.modules, "onnx", None)          # `import onnx` now raises ImportError
    assert read_metadata_props(path) == expected and len(expected) == 4
    meta = read_onnx_meta(path)
    assert (meta.precision, meta.layout, meta.crop) == ("int8", "trt+fp16", (8, 8))


@pytest.mark.parametrize("cut", [10, 40, -3])
def test_truncated_file_is_a_user_error(tmp_path, cut):
    from runtime.artifact import read_onnx_meta

    data = small_artifact(tmp_path / "m.onnx").read_bytes()
    bad = tmp_path / "cut.onnx"
    bad.write_bytes(data[:cut])
    with pytest.raises(ToolkitError, match="cannot read ONNX file|no toolkit metadata"):
        read_onnx_meta(bad)


def test_to_trt_onnx_mode_reads_artifacts_without_onnx(tmp_path, monkeypatch):
    """export/to_trt.py --onnx on a device without the onnx package: roles from the metadata
    alone; the mixed file builds typed on 10/11 and with INT8+FP16 flags on 8.x."""
    import export.engines as engines
    import export.trt_builder as trt_builder

    built = []
    monkeypatch.setattr(trt_builder, "tensorrt_status", lambda: (True, "fake"))
    monkeypatch.setattr(engines, "build_one", lambda art, best, calib, args, log: built.append((art.role, best)) or "")
    files = [small_artifact(tmp_path / "a.onnx", "int8", "trt+fp16"), small_artifact(tmp_path / "b.onnx", "int8", "trt")]
    monkeypatch.setitem(sys.modules, "onnx", None)
    args = argparse.Namespace(onnx=[str(f) for f in files], fp16=False, int8_implicit=False, quiet=True)
    for typed, expected in ((True, [("int8-fp16", False), ("int8-trt", False)]),
                            (False, [("int8-fp16", False), ("int8-trt", False)])):
        monkeypatch.setattr(engines, "_strongly_typed", lambda typed=typed: typed)
        built.clear()
        engines.engines_from_files(args, lambda *a: None)
        assert built == expected


@pytest.mark.parametrize("precision, layout, flags", [
    ("fp32", "", set()),
    ("fp16", "fp32-attention", {"trt_fp16_enable"}),
    ("int8", "trt", {"trt_int8_enable", "trt_fp16_enable"}),
])
def test_tensorrt_provider_options_per_artifact(tmp_path, precision, layout, flags):
    from runtime.backends.onnxruntime_backend import resolve_providers

    providers = resolve_providers("tensorrt", [TRT, CUDA, CPU], str(tmp_path), precision, layout)
    assert [p if isinstance(p, str) else p[0] for p in providers] == [TRT, CUDA, CPU]
    opts = providers[0][1]
    assert opts["trt_timing_cache_enable"] and opts["trt_timing_cache_path"] == str(tmp_path)
    assert opts["trt_engine_cache_path"] == str(tmp_path)
    assert {k for k in ("trt_int8_enable", "trt_fp16_enable") if opts.get(k)} == flags


def test_tensorrt_provider_refuses_the_strongly_typed_int8_file(tmp_path):
    """ONNX Runtime's TensorRT provider builds weakly typed networks: the _int8_fp16 file (opset 19,
    FP16 scales, for strongly typed TensorRT 10/11) is refused, naming the _int8_trt file."""
    from runtime.backends.onnxruntime_backend import resolve_providers

    for layout in ("trt+fp16", "ort"):
        with pytest.raises(ToolkitError, match="_int8_trt.onnx"):
            resolve_providers("tensorrt", [TRT, CUDA, CPU], str(tmp_path), "int8", layout)
    assert resolve_providers("cpu", [TRT, CUDA, CPU], str(tmp_path), "int8", "trt+fp16") == [CPU]


def test_backend_hands_the_int8_options_to_the_tensorrt_provider(tmp_path, monkeypatch):
    """No GPU provider here: a fake InferenceSession records what the backend passes."""
    import onnxruntime as ort

    from runtime.backends import open_backend

    seen = {}

    def fake_session(path, sess_options=None, providers=None):
        seen["providers"] = providers
        raise RuntimeError("[ONNXRuntimeError] : 1 : FAIL : fake session stops here")

    monkeypatch.setattr(ort, "get_available_providers", lambda: [TRT, CUDA, CPU])
    monkeypatch.setattr(ort, "InferenceSession", fake_session)
    path = small_artifact(tmp_path / "m.onnx", "int8", "trt")
    with pytest.raises(ToolkitError, match="fake session stops here"):
        open_backend(str(path), providers="tensorrt", trt_cache_dir=str(tmp_path / "c")).__enter__()
    name, opts = seen["providers"][0]
    assert name == TRT and opts["trt_int8_enable"] is True and opts["trt_timing_cache_path"] == str(tmp_path / "c")


@pytest.mark.parametrize("said, message, fix", [
    ("[ONNXRuntimeError] : 1 : FAIL : Load model from m.onnx failed:Unsupported model IR version: 10, "
     "max supported IR version: 9", "IR version 10, this ONNX Runtime reads at most 9", "upgrade onnxruntime"),
    # ONNX Runtime 1.16.3's words for an INT8 file written before the fix (unused ai.onnx.ml 5):
    ("[ONNXRuntimeError] : 1 : FAIL : Load model from m.onnx failed:/onnxruntime_src/onnxruntime/core/graph/"
     "model_load_utils.h:46 void onnxruntime::model_load_utils::ValidateOpsetForDomain(...) ONNX Runtime only "
     "*guarantees* support for models stamped with official released onnx opset versions. Opset 5 is under "
     "development and support for this is limited. Current official support for domain ai.onnx.ml is till "
     "opset 3.\n", "declares domain ai.onnx.ml opset 5, this ONNX Runtime supports it up to opset 3",
     "only the domains"),
    ("[ONNXRuntimeError] : 1 : FAIL : Load model from m.onnx failed: Unsupported opset 99 in domain ''",
     "refuses an opset or domain", "only the domains"),
    ("[ONNXRuntimeError] : 7 : INVALID_PROTOBUF : Load model from m.onnx failed:Protobuf parsing failed.",
     "not a readable ONNX file", "truncated or corrupt"),
    ("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : something else", "cannot load", "pip show onnxruntime"),
])
def test_load_errors_say_what_onnx_runtime_said(said, message, fix):
    from runtime.loaders import explain_load_error

    err = explain_load_error(Path("m.onnx"), said)
    assert message in err.message and fix in (err.fix or "") and err.found == said.splitlines()[0][:300]
    assert ("truncated" in (err.fix or "")) == ("Protobuf" in said)
