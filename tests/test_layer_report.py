"""export.layer_report: the engine inspector's layer JSON -> per-layer precision and verdicts (pure, no
TensorRT), the expectation from the source ONNX's fusion check, and the command's exit codes and
one-line errors. The fixtures follow the JSON TensorRT writes (keys and format strings as in NVIDIA's
trt-engine-explorer examples); the TensorRT path itself runs against the real bindings in
tests/test_trt_bindings.py."""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from apps.cli import run_cli
from apps.layer_report import main as layer_report_main
from export.engine_layers import Expectation, build_report, expectation_from_onnx, format_report, tensor_precision
from runtime.errors import ToolkitError

FP32 = "Row major linear FP32"
FP16 = "Channel major FP16 format where channel % 8 == 0"
FP16_LINEAR = "Row major linear FP16 format"
INT8 = "Thirty-two wide channel vectorized row major Int8 format"
INT8_IN = "Four wide channel vectorized row major Int8 format"


def _layer(name, kind, ins, outs, nodes=(), layer_type=None, sep="\x1f", **extra):
    """One detailed layer entry; ``ins`` / ``outs``: (tensor, Format/Datatype) pairs."""
    tensors = lambda pairs: [{"Name": t, "Location": "Device", "Dimensions": [1, 64, 32, 32], "Format/Datatype": f}
                             for t, f in pairs]
    raw = {"Name": name, "LayerType": layer_type or kind, "Inputs": tensors(ins), "Outputs": tensors(outs),
           "ParameterType": kind, **extra}
    if nodes:
        raw["Metadata"] = sep.join(f"[ONNX Layer: {n}]" for n in nodes)
    return raw


def _engine(fp16_conv=True):
    """An INT8+FP16 engine of two quantized convs, the attention kept FP32 and a float output:
    ``fp16_conv`` leaves the second conv FP16 behind a DequantizeLinear -> Cast (a stray Dequantize,
    a stray Cast) and adds a precision-changing Reformat."""
    layers = [
        _layer("input_cast", "Reformat", [("input", FP32)], [("x16", FP16_LINEAR)], ["input_cast"]),
        _layer("qx", "Reformat", [("x16", FP16_LINEAR)], [("xq", INT8_IN)], ["qx"], Origin="QDQ"),
        _layer("conv1 + relu1", "Convolution", [("xq", INT8_IN)], [("r1", INT8)], ["dqx", "dqw1", "conv1", "relu1", "q2"],
               layer_type="CaskConvolution", Weights={"Type": "Int8", "Count": 1728}, Bias={"Type": "Float", "Count": 64}),
    ]
    if fp16_conv:
        layers += [
            _layer("dq2", "Scale", [("r1", INT8)], [("d2", FP32)], ["dq2"], layer_type="Scale"),
            _layer("cast_dq2", "Reformat", [("d2", FP32)], [("c2", FP16)], ["cast_dq2"]),
            _layer("conv2", "Convolution", [("c2", FP16)], [("y2", FP16)], ["dqw2", "conv2"],
                   layer_type="CaskConvolution", Weights={"Type": "Half", "Count": 36864}),
            _layer("Reformatting CopyNode for Input Tensor 0 to /head/Resize", "Reformat", [("y2", FP16)],
                   [("y2r", FP32)], Origin="REFORMAT"),
        ]
    else:
        layers += [
            _layer("conv2", "Convolution", [("r1", INT8)], [("y2", FP16)], ["dq2", "dqw2", "conv2"],
                   layer_type="CaskConvolution", Weights={"Type": "Int8", "Count": 36864}),
            _layer("Reformatting CopyNode for Input Tensor 0 to /head/Resize", "Reformat", [("y2", FP16)],
                   [("y2r", FP16_LINEAR)], Origin="REFORMAT"),
        ]
    layers += [
        _layer("/head/Resize", "Resize", [("y2r", FP16_LINEAR)], [("z", FP16_LINEAR)], ["/head/Resize"]),
        _layer("/nl/Cast", "Reformat", [("z", FP16_LINEAR)], [("z32", FP32)], ["/nl/Cast"]),
        _layer("/nl/MatMul", "MatrixMultiply", [("z32", FP32), ("z32", FP32)], [("a", FP32)], ["/nl/MatMul"],
               layer_type="gemm"),
        _layer("/out/Cast", "Reformat", [("a", FP32)], [("a16", FP16_LINEAR)], ["/out/Cast"]),
        _layer("/head/conv_out", "Convolution", [("a16", FP16_LINEAR)], [("o16", FP16_LINEAR)], ["/head/conv_out"],
               layer_type="CaskConvolution", Weights={"Type": "Half", "Count": 1216}),
        _layer("/output/Cast", "Reformat", [("o16", FP16_LINEAR)], [("output", FP32)], ["/output/Cast"]),
    ]
    return json.dumps({"Layers": layers, "Bindings": ["input", "output"]})


OPS = {"input_cast": "Cast", "qx": "QuantizeLinear", "dqx": "DequantizeLinear", "dq2": "DequantizeLinear",
       "cast_dq2": "Cast", "/nl/Cast": "Cast", "/out/Cast": "Cast", "/output/Cast": "Cast", "conv1": "Conv",
       "conv2": "Conv", "/nl/MatMul": "MatMul", "/head/conv_out": "Conv"}
EXPECT = Expectation(("conv1", "conv2"), frozenset({"/nl/MatMul", "/head/conv_out"}), OPS, "from the fixture")


@pytest.mark.parametrize("desc, precision", [
    (FP32, "FP32"), (FP16, "FP16"), (INT8, "INT8"), ("Row major Int8 format", "INT8"), ("Half", "FP16"),
    ("Half(64,1:8,...)", "FP16"), ("Float", "FP32"), ("Row major linear Int32", "INT32"),
    ("Row major linear BFloat16 format", "BF16"), ("Row major linear UInt8 format", "UINT8"),
    ("Thirty-two wide channel vectorized row major Int8 format.", "INT8"), ("N/A due to dynamic shapes", "?")])
def test_tensor_precision_reads_the_format_strings(desc, precision):
    assert tensor_precision(desc) == precision


def test_fp16_conv_behind_dq_cast_and_strays_are_flagged():
    report = build_report(_engine(fp16_conv=True), EXPECT)
    verdict = {r.layer: r.verdict for r in report.rows}
    assert verdict["conv1 + relu1"] == "INT8"
    assert verdict["conv2"] == "NOT INT8: expected INT8, runs FP16, weights FP16"
    assert verdict["dq2"] == "STRAY Dequantize" and verdict["cast_dq2"] == "STRAY Cast FP32->FP16"
    assert verdict["Reformatting CopyNode for Input Tensor 0 to /head/Resize"] == "STRAY Reformat FP16->FP32"
    assert verdict["qx"] == "Quantize: expected, the network input's quantization"
    assert verdict["input_cast"] == "Cast FP32->FP16: expected, the network input's conversion"
    assert verdict["/nl/Cast"] == "Cast FP16->FP32: expected, next to /nl/MatMul, kept float on purpose"
    assert verdict["/output/Cast"] == "Cast FP16->FP32: expected, the output's cast"
    assert verdict["/nl/MatMul"] == verdict["/head/conv_out"] == "float, kept on purpose"
    assert report.summary() == "1 of 2 quantized layers run INT8; 3 stray Cast/DQ layers"
    assert report.exit_code == 1
    assert [r.layer for r in report.rows if r.flagged] == ["dq2", "cast_dq2", "conv2",
                                                           "Reformatting CopyNode for Input Tensor 0 to /head/Resize"]


def test_clean_int8_engine_passes_and_says_which_conversions_are_expected():
    report = build_report(_engine(fp16_conv=False), EXPECT)
    assert report.summary() == "2 of 2 quantized layers run INT8; 0 stray Cast/DQ layers" and report.exit_code == 0
    assert {r.layer: r.verdict for r in report.rows}["Reformatting CopyNode for Input Tensor 0 to /head/Resize"] == \
        "layout reformat"
    text = format_report(report)
    assert text.splitlines()[0].split() == ["layer", "type", "in", "out", "weights", "verdict"]
    assert "expected conversions: input_cast (the network input's conversion); qx (the network input's quantization)" in text
    assert text.splitlines()[-1] == report.summary()


def test_a_node_in_no_engine_layer_is_flagged():
    report = build_report(_engine(fp16_conv=False), Expectation(("conv1", "conv2", "/layer4/Conv"), EXPECT.kept, OPS))
    assert report.missing == ["/layer4/Conv"] and report.exit_code == 1
    assert "1 expected INT8 but not found in the engine" in report.summary()


def test_trt86_names_and_record_separator_metadata():
    """TensorRT 8.5 has no Metadata (node names in the fused layer name); 8.6 joins entries with \\x1e."""
    layers = [_layer("QuantizeLinear_2", "Reformat", [("input.1", FP32)], [("q", INT8_IN)], Origin="QDQ"),
              _layer("layer1.0.conv1.weight + QuantizeLinear_20 + Conv_22 + PWN(Clip_13)", "Convolution",
                     [("q", INT8_IN)], [("c", INT8)], Weights={"Type": "Int8", "Count": 9}),
              _layer("conv_b", "Convolution", [("c", INT8)], [("476", FP32)], ["DequantizeLinear_30", "Conv_31"],
                     sep="\x1e", Weights={"Type": "Int8", "Count": 9}),
              _layer("QuantizeLinear_40_quantize_scale_node", "Scale", [("c", INT8)], [("s", FP32)])]
    text = json.dumps({"Layers": layers, "Bindings": ["input.1", "476"]})
    report = build_report(text, Expectation(("Conv_22", "Conv_31")))
    verdict = {r.layer: r.verdict for r in report.rows}
    assert report.summary() == "2 of 2 quantized layers run INT8; 1 stray Cast/DQ layers"
    assert verdict["QuantizeLinear_40_quantize_scale_node"] == "STRAY Dequantize"
    assert verdict["QuantizeLinear_2"] == "Quantize: expected, the network input's quantization"


def test_without_the_onnx_every_convolution_outside_the_kept_nodes_is_expected_int8():
    expect = Expectation(kept=frozenset({"/nl/MatMul", "/head/conv_out"}), by_convolution=True)
    report = build_report(_engine(fp16_conv=True), expect)
    assert report.quantized == 2 and report.int8 == 1 and report.exit_code == 1


@pytest.mark.parametrize("info, words", [
    ({"Layers": ["conv1 + relu1", "conv2"], "Bindings": ["input", "output"]}, "detailed profiling verbosity"),
    ({"Layers": []}, "detailed profiling verbosity"),
    ({"meta": {}}, "not TensorRT layer information")])
def test_names_only_or_foreign_json_is_one_error(info, words):
    with pytest.raises(ToolkitError, match=words) as exc:
        build_report(json.dumps(info), EXPECT)
    if "verbosity" in words:
        assert "export/to_trt.py" in str(exc.value) and "\n" not in str(exc.value)


def _qdq_onnx(path=None):
    """x -> Q/DQ -> conv1 (weights Q/DQ) -> relu1 -> conv_f (float, no Q/DQ) -> y."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w1"),
             numpy_helper.from_array(np.full(4, 0.02, np.float32), "ws"),
             numpy_helper.from_array(np.zeros(4, np.int8), "wz"),
             numpy_helper.from_array(np.array(0.05, np.float32), "xs"), numpy_helper.from_array(np.array(0, np.int8), "xz"),
             numpy_helper.from_array(rng.standard_normal((4, 4, 1, 1)).astype(np.float32), "wf")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"], name="qx"),
             helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"], name="dqx"),
             helper.make_node("QuantizeLinear", ["w1", "ws", "wz"], ["wq"], name="qw1", axis=0),
             helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["wd"], name="dqw1", axis=0),
             helper.make_node("Conv", ["xd", "wd"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "wf"], ["y"], name="conv_f")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    if path is not None:
        onnx.save(model, str(path))
    return model


def test_expectation_is_what_the_fusion_check_says_runs_int8():
    pytest.importorskip("onnx")
    expect = expectation_from_onnx(_qdq_onnx(), None, "m_int8_trt.onnx")
    assert expect.int8 == ("conv1",) and expect.op_types["qx"] == "QuantizeLinear"
    assert "TensorRT 8.x flags" in expect.source and "predicts 1 will not" in expect.source


def _fixture_engine_json(tmp_path):
    layers = [_layer("qx", "Reformat", [("x", FP32)], [("xq", INT8_IN)], ["qx"], Origin="QDQ"),
              _layer("conv1 + relu1", "Convolution", [("xq", INT8_IN)], [("r1", INT8)], ["dqx", "dqw1", "conv1", "relu1"],
                     layer_type="CaskConvolution", Weights={"Type": "Int8", "Count": 108}),
              _layer("dq_r1", "Scale", [("r1", INT8)], [("r1f", FP32)], layer_type="Scale"),
              _layer("conv_f", "Convolution", [("r1f", FP32)], [("y", FP32)], ["conv_f"],
                     layer_type="CaskConvolution", Weights={"Type": "Float", "Count": 16})]
    path = tmp_path / "m_int8.layers.json"
    path.write_text(json.dumps({"Layers": layers, "Bindings": ["x", "y"]}))
    return path


def test_command_on_trtexec_layer_info_with_onnx_and_json(tmp_path, capsys):
    pytest.importorskip("onnx")
    _qdq_onnx(tmp_path / "m_int8_trt.onnx")
    out = tmp_path / "report.json"
    code = run_cli(layer_report_main, [str(_fixture_engine_json(tmp_path)), "--onnx", str(tmp_path / "m_int8_trt.onnx"),
                          "--json", str(out)])
    printed = capsys.readouterr().out
    assert code == 1
    assert printed.splitlines()[-1] == "1 of 1 quantized layers run INT8; 1 stray Cast/DQ layers"
    saved = json.loads(out.read_text())
    assert saved["exit_code"] == 1 and [r["verdict"] for r in saved["rows"]] == [
        "Quantize: expected, the network input's quantization", "INT8", "STRAY Dequantize", ""]


def _write(path, data):
    (path.write_text if isinstance(data, str) else path.write_bytes)(data)
    return path


@pytest.mark.parametrize("make, words", [
    (lambda d: d / "missing.engine", "engine file not found"),
    (lambda d: _write(d / "notes.engine", "not an engine\n"), "is a text file"),
    (lambda d: _write(d / "m.engine.json", '{"meta": {}}'), "is a text file"),
    (lambda d: _write(d / "m.onnx", b"\x08\x07"), "is an ONNX model"),
    (lambda d: _write(d / "empty.engine", b""), "is empty")])
def test_bad_input_is_one_error_line(tmp_path, capsys, make, words):
    assert run_cli(layer_report_main, [str(make(tmp_path))]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and words in err and err.count("\n") == 1


def test_tensorrt_missing_says_where_the_command_runs(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)          # import tensorrt -> ImportError
    engine = tmp_path / "m_int8.engine"
    engine.write_bytes(b"\x00ftrt\x01\x02binary plan")
    assert run_cli(layer_report_main, [str(engine)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "TensorRT is not installed here" in err
    assert "Jetson" in err and "python3-libnvinfer" in err and "pip install tensorrt" in err


def test_missing_onnx_flag_file_is_an_error(tmp_path, capsys):
    assert run_cli(layer_report_main, [str(_fixture_engine_json(tmp_path)), "--onnx", str(tmp_path / "nope.onnx")]) == 2
    assert "ONNX file not found" in capsys.readouterr().err
