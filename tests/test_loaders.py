"""runtime.loaders: every option reaches ONNX Runtime's SessionOptions, a session comes from a file,
bytes or a ModelProto, and a file ONNX Runtime refuses is one explained ToolkitError."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from runtime.errors import ToolkitError
from runtime.loaders import SessionFromOnnx, onnx_file, session_from_onnx

ort = pytest.importorskip("onnxruntime")


def add_one_model():
    """y = x + 1 on a (2, 3) float input."""
    from onnx import TensorProto, helper, numpy_helper

    one = numpy_helper.from_array(np.ones((2, 3), np.float32), "one")
    graph = helper.make_graph([helper.make_node("Add", ["x", "one"], ["y"], name="add")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])], [one])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


@pytest.fixture()
def add_one(tmp_path) -> Path:
    path = tmp_path / "add_one.onnx"
    path.write_bytes(add_one_model().SerializeToString())
    return path


def test_every_option_reaches_the_session_options(tmp_path):
    loader = SessionFromOnnx("m.onnx", threads=3, optimization="basic", flush_denormals=True, spin=False,
                             profile=str(tmp_path / "prof"), optimized_path=tmp_path / "opt.onnx", log_severity=3)
    opts = loader.session_options()
    assert opts.intra_op_num_threads == 3 and opts.log_severity_level == 3
    assert opts.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    assert opts.get_session_config_entry("session.set_denormal_as_zero") == "1"
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert opts.enable_profiling and opts.profile_file_prefix == str(tmp_path / "prof")
    assert opts.optimized_model_filepath == str(tmp_path / "opt.onnx")


def test_the_defaults_are_onnx_runtimes_own():
    """Nothing set that the caller did not ask for: a loader without options is a plain session."""
    opts, plain = SessionFromOnnx("m.onnx").session_options(), ort.SessionOptions()
    for name in ("intra_op_num_threads", "log_severity_level", "graph_optimization_level", "enable_profiling",
                 "optimized_model_filepath"):
        assert getattr(opts, name) == getattr(plain, name), name
    for key in ("session.set_denormal_as_zero", "session.intra_op.allow_spinning"):
        with pytest.raises(Exception):           # ORT: no such entry (not set)
            opts.get_session_config_entry(key)
    assert SessionFromOnnx("m.onnx").providers == ["CPUExecutionProvider"]


@pytest.mark.parametrize("level, name", [("all", "ORT_ENABLE_ALL"), ("extended", "ORT_ENABLE_EXTENDED"),
                                         ("basic", "ORT_ENABLE_BASIC"), ("disabled", "ORT_DISABLE_ALL")])
def test_optimization_levels(level, name):
    assert SessionFromOnnx("m.onnx", optimization=level).session_options().graph_optimization_level == \
        getattr(ort.GraphOptimizationLevel, name)


def test_an_unknown_optimization_level_is_refused_with_the_choices():
    with pytest.raises(ToolkitError, match="all | extended | basic | disabled"):
        SessionFromOnnx("m.onnx", optimization="max")


def test_a_file_bytes_and_a_model_proto_give_the_same_session(add_one):
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    model = add_one_model()
    for source in (add_one, str(add_one), model.SerializeToString(), model):
        sess = session_from_onnx(source, threads=1, flush_denormals=True, spin=False)
        assert sess.get_providers() == ["CPUExecutionProvider"]
        np.testing.assert_array_equal(sess.run(None, {"x": x})[0], x + 1)


def test_the_loader_is_cheap_and_builds_a_new_session_per_call(add_one):
    loader = SessionFromOnnx(add_one)
    assert loader() is not loader()


def test_optimized_graph_and_profile_files_are_written(add_one, tmp_path):
    sess = SessionFromOnnx(add_one, optimized_path=tmp_path / "opt.onnx", profile=str(tmp_path / "prof"))()
    sess.run(None, {"x": np.zeros((2, 3), np.float32)})
    trace = Path(sess.end_profiling())
    assert trace.name.startswith("prof") and any(e.get("name") == "model_run" for e in json.loads(trace.read_text()))
    import onnx

    assert [n.op_type for n in onnx.load(str(tmp_path / "opt.onnx")).graph.node] == ["Add"]


def test_disabled_optimizers_are_passed_only_when_given(add_one, monkeypatch):
    """The ONNX Runtime backend's FP16-scale Q/DQ files need them; a plain call passes none (older
    ONNX Runtime builds and test doubles take no such keyword)."""
    seen = []
    real = ort.InferenceSession
    monkeypatch.setattr(ort, "InferenceSession", lambda *a, **k: seen.append(k) or real(*a, **k))
    SessionFromOnnx(add_one)()
    SessionFromOnnx(add_one, disabled_optimizers=("WeightBiasQuantization", "NoSuchPass"))()
    assert "disabled_optimizers" not in seen[0]
    assert seen[1]["disabled_optimizers"] == ["WeightBiasQuantization", "NoSuchPass"]


def test_a_missing_or_unreadable_file_is_one_explained_error(tmp_path, add_one):
    from runtime.backends import open_backend

    assert onnx_file(str(add_one)) == add_one
    with pytest.raises(ToolkitError, match="ONNX file not found") as missing:
        SessionFromOnnx(tmp_path / "missing.onnx")()
    assert "export it first" in missing.value.fix
    import importlib.util

    backends = ["onnxruntime"] + (["openvino"] if importlib.util.find_spec("openvino") else [])
    for backend in backends:                            # the backends say it the same way
        with pytest.raises(ToolkitError, match="ONNX file not found"):
            open_backend(str(tmp_path / "missing.onnx"), backend=backend).__enter__()
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07 this is not a protobuf of a model")
    with pytest.raises(ToolkitError, match=f"ONNX Runtime cannot load {bad}") as refused:
        SessionFromOnnx(bad)()
    assert refused.value.found and "\n" not in str(refused.value)


def test_an_in_memory_model_keeps_onnx_runtimes_own_exception():
    """Bytes and ModelProtos are the toolkit's own models: a failure there is a bug, with a traceback."""
    with pytest.raises(Exception) as raised:
        SessionFromOnnx(b"\x08\x07 not a model")()
    assert not isinstance(raised.value, ToolkitError)


def test_onnx_runtime_missing_is_a_one_line_error(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "onnxruntime", None)     # import onnxruntime -> ImportError
    with pytest.raises(ToolkitError, match="ONNX Runtime is not installed") as err:
        SessionFromOnnx("m.onnx")()
    assert "pip install onnxruntime" in err.value.fix
