"""The project's TensorRT and CUDA code against the REAL bindings of each supported version.

tests/trt_bindings/ downloads the bindings wheels from PyPI (cached), builds stub libraries for
them and runs a check script per version in its own subprocess (one process cannot import two
``tensorrt`` versions). Builder, parser, network and runtime objects exist only with a GPU: those
are stand-ins that keep exactly the methods the real classes of that version have
(tests/trt_bindings/gpu_free.py). Skipped with the reason where PyPI or a C compiler is missing.
``python3 -m tests.trt_bindings`` prints the matrix; so does test_print_matrix with ``-s``/``-rA``.
"""
from __future__ import annotations

import pytest

from tests.trt_bindings.matrix import collect, cuda_report, format_matrix, tensorrt_report
from tests.trt_bindings.prepare import CUDA_PYTHON, TENSORRT

KEPT = ["/nl_block/MatMul", "/nl_block/Softmax", "/ArgMax"]     # of KEEP, the layers with an FP32 output


def _report(version: str) -> dict:
    r = tensorrt_report(version)
    if isinstance(r, str):
        pytest.skip(r)
    return r


def _major(version: str) -> int:
    return int(version.split(".")[0])


@pytest.mark.parametrize("version", TENSORRT)
def test_features_and_enum_values(version):
    r = _report(version)
    assert r["version"] == version
    f, e, major = r["features"], r["enum"], _major(version)
    assert e["STRONGLY_TYPED"] == {8: None, 10: 1, 11: 0}[major]        # never a literal in the code
    assert (e["EXPLICIT_BATCH"] is None) == (major >= 11)
    legacy = major < 11
    assert (f["fp16_flag"], f["int8_flag"], f["precision_constraints"], f["implicit_int8"]) == (legacy,) * 4
    assert f["strongly_typed"] == (major >= 10) and f["timing_cache"]


@pytest.mark.parametrize("version", TENSORRT)
def test_every_route_with_real_flags(version):
    """One INT8 file per TensorRT generation (issue 18): 8.x builds _int8_trt with INT8+FP16 flags and
    the attention pinned, refusing _int8_fp16 (opset 19, FP16 scales); 10 builds _int8_fp16 strongly
    typed and still _int8_trt with its (deprecated) flags; 11 builds _int8_fp16 and refuses _int8_trt."""
    routes, major = _report(version)["routes"], _major(version)
    batch = ["EXPLICIT_BATCH"] if major < 11 else []
    typed = {"network_flags": sorted(batch + ["STRONGLY_TYPED"]), "builder_flags": [], "strongly_typed": True}
    flags_int8 = {"network_flags": batch, "strongly_typed": False, "onnx_role": "int8-trt",
                  "builder_flags": ["INT8", "FP16", "OBEY_PRECISION_CONSTRAINTS"]}
    if major == 8:
        want = {"fp32": {"builder_flags": []}, "fp16": {"builder_flags": ["FP16", "OBEY_PRECISION_CONSTRAINTS"]}}
        want = {k: {"network_flags": batch, "strongly_typed": False, **v} for k, v in want.items()}
        want["int8-trt"] = flags_int8
        refused = {"int8-fp16": "is for TensorRT 10/11"}
    else:
        want = {"fp32": typed, "fp16": typed, "int8-fp16": {**typed, "onnx_role": "int8-fp16"}}
        refused = {}
        if major == 10:
            want["int8-trt"] = flags_int8
        else:
            refused = {"int8-trt": "no longer has", "implicit": "removed in TensorRT 11"}
    for name, expected in want.items():
        got = routes[name]
        assert {k: got[k] for k in expected} == expected, (name, got)
    for name, words in refused.items():
        assert words in routes[name]["refused"], (name, routes[name])
    assert "_int8_trt.onnx" in routes["int8-fp16"].get("refused", "_int8_trt.onnx")     # names the other file
    assert "_int8_fp16.onnx" in routes["int8-trt"].get("refused", "_int8_fp16.onnx")
    if major < 11:
        implicit = routes["implicit"]
        assert (implicit["onnx_role"], implicit["builder_flags"], implicit["calibrator_set"]) == ("fp32", ["INT8"], True)
        assert implicit["calibrator_freed"] == 1 and implicit["streams_left"] == 0    # bug 7: released


@pytest.mark.parametrize("version", TENSORRT)
def test_pin_exact_names_and_float_outputs_only(version):
    """Bug 1: no prefix matches (`/nl_block/MatMul_1`, the FP16 Cast), no INT32 output retyped."""
    r = _report(version)
    if _major(version) >= 11:
        assert "no layer precision constraints" in r["pin_direct"]["error"]
        return
    assert r["pin_direct"] == {"ok": len(KEPT)}
    for name in ("fp16", "int8-trt") if _major(version) == 8 else ("int8-trt",):
        route = r["routes"][name]
        assert route["pinned"] == KEPT
        assert route["output_types"] == [[n, 0, "FLOAT", "FLOAT"] for n in KEPT]


@pytest.mark.parametrize("version", TENSORRT)
def test_timing_cache_keyed_and_rejection_reported(version):
    """Bug 2: one cache file per TensorRT version + GPU; a rejected cache is reported and replaced."""
    t = _report(version)["timing_cache"]
    assert t["keyed_name"] == f"timing.trt{version}.sm87.NVIDIA-Jetson-AGX-Orin.cache"
    assert t["accepted"]["set_calls"] == [["cache-from-elsewhere", True]]
    rejected = t["rejected"]
    assert rejected["set_calls"] == [["cache-from-elsewhere", False], ["", True]]
    assert len(rejected["reported"]) == 1 and "rejected by TensorRT" in rejected["reported"][0]
    assert rejected["file_after"] == "fresh-timing-cache"


@pytest.mark.parametrize("version", TENSORRT)
def test_logger_parser_errors_and_failed_build(version):
    r, major = _report(version), _major(version)
    assert r["logger_is_ilogger"] and r["logger_messages"] == ["[WARNING] a warning"]
    parser = r["parser"]["error"]
    assert "2 error(s)" in parser and "UNSUPPORTED_NODE" in parser and "problem 1" in parser
    assert "bound method" not in parser                 # ErrorCode.name is a method in 8.6 / 10.3
    if major == 8:
        assert "node #0" in parser and "/node_0" not in parser    # 8.6's ParserError has node() only
    else:
        assert "name /node_0, operator Resize" in parser
    assert "[ERROR] out of workspace memory" in r["build"]["error"]


@pytest.mark.parametrize("version", TENSORRT)
def test_entropy_calibrator_subclass(version):
    c = _report(version)["calibrator"]
    if _major(version) >= 11:
        assert "removed in TensorRT 11" in c["error"]
        return
    assert c["is_subclass"] and c["batch_size"] == 2 and c["first_ptr_is_int"] and c["first_values"] == [0.0]
    assert c["second"] and c["third"] is None
    assert c["cache_before"] is None and c["cache_after"] == "TRT-8601-EntropyCalibration2"
    assert c["freed"] == 1 and c["streams_left"] == 0 and c["leftover_files"] == ["entropy.cache"]


@pytest.mark.parametrize("version", TENSORRT)
def test_backend_checks_results_and_activates_per_thread(version):
    """Bugs 6 and 5: None context / refused address are errors; inference on a worker thread
    makes the device current on that thread first; FP16 output buffers."""
    b = _report(version)["backend"]
    assert "could not create an execution context" in b["no_context"]["error"]
    assert "refused the device address" in b["address_refused"]["error"]
    ok = b["ok"]
    assert ok["output_shape"] == [1, 19, 8, 16] and ok["executed"] == 1 and ok["device"] == 1
    assert ok["activated_on"] == ["MainThread", "inference-worker"]
    assert ok["freed"] == 2 and ok["streams_left"] == 0


@pytest.mark.parametrize("version", TENSORRT)
def test_every_engine_is_built_with_detailed_profiling_verbosity(version):
    """export/layer_report.py reads per-layer precisions, which TensorRT keeps only with DETAILED."""
    built = {k: r for k, r in _report(version)["routes"].items() if "refused" not in r}
    assert built and all(r["profiling_verbosity"] == "DETAILED" for r in built.values()), built


@pytest.mark.parametrize("version", TENSORRT)
def test_layer_report_reads_the_engine_inspector(version):
    """export.layer_report over the real module: deserialize, ProfilingVerbosity, the inspector's JSON
    (LayerInformationFormat.JSON); a stray Dequantize and an FP32 conv are flagged, the input
    quantization and the output cast are expected; names-only, unloadable and other-version engines
    are one-line errors."""
    r = _report(version)["layer_report"]
    ok, verdicts = r["ok"], r["ok"]["verdicts"]
    assert ok["inspected"] == ["JSON"] and ok["exit_code"] == 1
    assert ok["summary"] == "1 of 2 quantized layers run INT8; 1 stray Cast/DQ layers"
    assert verdicts["/conv1/Conv + /relu1/Relu"] == "INT8" and verdicts["/conv2/DequantizeLinear"] == "STRAY Dequantize"
    assert verdicts["/conv2/Conv"] == "NOT INT8: expected INT8, runs FP32, weights FP32"
    assert verdicts["/input/QuantizeLinear"] == "Quantize: expected, the network input's quantization"
    assert verdicts["/out/Cast"].endswith("expected, the output's cast")
    assert verdicts["/nl/MatMul"] == "float, kept on purpose"
    assert "m_int8_fp16.onnx is not beside the engine" in ok["notes"][0]
    assert "detailed profiling verbosity" in r["names_only"]["error"] and "export/to_trt.py" in r["names_only"]["error"]
    assert f"TensorRT {version} cannot load" in r["not_an_engine"]["error"]
    assert f"built with TensorRT 7.1.3, this is {version}" in r["other_version"]["error"]


@pytest.mark.parametrize("version", TENSORRT)
def test_every_tensorrt_name_exists_or_is_guarded(version):
    audit = _report(version)["audit"]
    assert audit["names_checked"] >= 50 and audit["missing_unguarded"] == []


@pytest.mark.parametrize("version", CUDA_PYTHON)
def test_cuda_python_without_driver(version):
    """Bug 3: cuda-python 12.x raises RuntimeError without a driver; the toolkit reports a ToolkitError
    and export/to_trt.py --backend auto skips the engine step."""
    r = cuda_report(version)
    if isinstance(r, str):
        pytest.skip(r)
    modern = version.startswith("13")
    assert r["paths"] == {"cuda.cudart": not modern, "cuda.bindings.runtime": modern}
    assert r["chosen"] == ("cuda.bindings.runtime" if modern else "cuda.cudart")
    for call in ("device_properties", "use_device"):
        assert r[call]["raised"] == "ToolkitError", r[call]
    assert r["tensorrt_status"]["returned"].startswith("(False, 'CUDA call cudaSetDevice failed")
    assert r["engine_mode_auto"]["returned"].startswith("(False, ")


def test_print_matrix(capsys):
    trt, cuda = collect()
    if all(isinstance(r, str) for r in [*trt.values(), *cuda.values()]):
        pytest.skip(next(iter(trt.values())))
    text = format_matrix(trt, cuda)
    with capsys.disabled():
        print("\n" + text)
    lines = text.splitlines()
    assert lines[0].split()[:1] == ["TensorRT"] and all(k in lines[0] for k in ("int8-trt", "int8-fp16"))
    for version in TENSORRT:
        row = next(line for line in lines if line.startswith(version + " "))
        assert "skipped" in row or ("typed" in row if _major(version) >= 10 else "INT8+FP16" in row), row
