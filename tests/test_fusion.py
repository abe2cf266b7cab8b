"""calibration.fusion: the model of TensorRT's Q/DQ fusion rules, on small graphs that break one rule
each, on the layout the toolkit wrote before issue 18 (Casts around every Q/DQ) and on a file with an
unquantized residual; calibration.placement: which Add input is the skip."""
from __future__ import annotations

import numpy as np
import pytest

from calibration.fusion import check_fusion


def _conv_qdq_model(**bad):
    """Q/DQ -> Conv (+ a residual Add with a quantized skip); ``bad`` breaks one rule."""
    from onnx import TensorProto, helper, numpy_helper

    f16 = bad.get("fp16")
    ft = np.float16 if f16 else np.float32
    w = np.random.default_rng(0).standard_normal((3, 3, 3, 3)).astype(ft)
    wscale = np.full(1 if bad.get("per_tensor") else 3, 0.02, ft)
    zp = np.array(3 if bad.get("zero_point") else 0, np.int8)
    xs = np.array(0.05, np.float32 if bad.get("fp32_scale_on_fp16") or not f16 else np.float16)
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(wscale, "ws"),
             numpy_helper.from_array(np.zeros(3, np.int8), "wz"), numpy_helper.from_array(zp, "xz"),
             numpy_helper.from_array(xs, "xs"), numpy_helper.from_array(np.array(0.05, ft), "ss"),
             numpy_helper.from_array(np.array(0, np.int8), "sz"),
             numpy_helper.from_array(np.zeros(3, np.int32), "b32"), numpy_helper.from_array(np.array(0.1, np.float32), "bs")]
    x = "x"
    nodes = []
    if bad.get("cast_before_q"):
        nodes.append(helper.make_node("Cast", ["x"], ["x32"], to=TensorProto.FLOAT, name="cast_in"))
        inits[4] = numpy_helper.from_array(np.array(0.05, np.float32), "xs")
        x = "x32"
    nodes += [helper.make_node("QuantizeLinear", [x, "xs"] + ([] if bad.get("no_zero_point") else ["xz"]), ["xq"], name="qx"),
              helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"], name="dqx")]
    data = "xd"
    if bad.get("cast_after_dq"):
        nodes.append(helper.make_node("Cast", ["xd"], ["xdc"], to=TensorProto.FLOAT16 if f16 else TensorProto.FLOAT,
                                      name="cast_dq"))
        data = "xdc"
    axis = 1 if bad.get("axis") else 0
    if bad.get("missing_weight_dq"):
        conv_in = [data, "w"]
    else:
        nodes += [helper.make_node("QuantizeLinear", ["w", "ws", "wz"], ["wq"], name="qw", axis=axis),
                  helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["wd"], name="dqw", axis=axis)]
        conv_in = [data, "wd"]
    if bad.get("bias"):
        nodes.append(helper.make_node("DequantizeLinear", ["b32", "bs"], ["bd"], name="dqb"))
        conv_in.append("bd")
    if bad.get("orphan_q"):
        nodes.append(helper.make_node("QuantizeLinear", [x, "xs", "xz"], ["lost"], name="q_orphan"))
    nodes.append(helper.make_node("Conv", conv_in, ["c"], name="conv", pads=[1, 1, 1, 1]))
    skip = "x"
    if not bad.get("unquantized_residual"):
        nodes += [helper.make_node("QuantizeLinear", ["x", "ss", "sz"], ["sq"], name="qs"),
                  helper.make_node("DequantizeLinear", ["sq", "ss", "sz"], ["sd"], name="dqs")]
        skip = "sd"
    nodes.append(helper.make_node("Add", ["c", skip], ["y"], name="add"))
    et = TensorProto.FLOAT16 if f16 else TensorProto.FLOAT
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", et, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", et, [1, 3, 8, 8])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19 if f16 else 17)])


@pytest.mark.parametrize("bad, target, message", [
    ({}, "weak", None),
    ({"fp16": True}, "strong", None),
    ({"zero_point": True}, "weak", "zero point not INT8 0"),
    ({"no_zero_point": True}, "weak", "no zero point"),
    ({"per_tensor": True}, "weak", "per-tensor"),
    ({"axis": True}, "weak", "on axis 1, not 0"),
    ({"bias": True}, "weak", "its bias is quantized"),
    ({"orphan_q": True}, "weak", "orphan: q_orphan"),
    ({"missing_weight_dq": True}, "weak", "its weight input is not quantized"),
    ({"unquantized_residual": True}, "weak", "residual input x is not quantized"),
    ({"cast_after_dq": True}, "weak", "a Cast (cast_dq) between dqx and conv"),
    ({"fp16": True, "cast_before_q": True}, "strong", "a Cast in front of qx"),
    ({"fp16": True, "fp32_scale_on_fp16": True}, "strong", "scale type FP32 != input type FP16"),
    ({"fp16": True}, "weak", "TensorRT 8.x takes FP32 scales only"),
])
def test_fusion_check_names_each_reason(bad, target, message):
    report = check_fusion(_conv_qdq_model(**bad), target)
    if message is None:
        assert report.ok, report.problems()
        assert report.counts()["int8"] == 2          # the Conv and the residual Add
    else:
        assert not report.ok and any(message in p for p in report.problems()), report.problems()


def test_conv_transpose_weights_are_per_channel_on_axis_1():
    from onnx import TensorProto, helper, numpy_helper

    def model(axis):
        inits = [numpy_helper.from_array(np.ones((3, 2, 2, 2), np.float32), "w"),
                 numpy_helper.from_array(np.full(2, 0.1, np.float32), "ws"),
                 numpy_helper.from_array(np.zeros(2, np.int8), "wz"),
                 numpy_helper.from_array(np.array(0.1, np.float32), "xs"), numpy_helper.from_array(np.array(0, np.int8), "xz")]
        nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"], name="qx"),
                 helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"], name="dqx"),
                 helper.make_node("QuantizeLinear", ["w", "ws", "wz"], ["wq"], name="qw", axis=axis),
                 helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["wd"], name="dqw", axis=axis),
                 helper.make_node("ConvTranspose", ["xd", "wd"], ["y"], name="deconv", strides=[2, 2])]
        graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 8, 8])], inits)
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])

    assert check_fusion(model(1), "weak").ok
    assert any("on axis 0, not 1" in p for p in check_fusion(model(0), "weak").problems())


@pytest.fixture(scope="module")
def qdq_files(tmp_path_factory):
    """The tiny variant's TensorRT 8.x Q/DQ file, with its ranges (max calibration, random tiles)."""
    from tests.conftest import tiny_int8_files

    return tiny_int8_files(tmp_path_factory.mktemp("fusion"))


def test_the_pre_issue_18_int8_fp16_pattern_fails(qdq_files):
    """Casts around every Q/DQ (what convert_int8_fp16 wrote before: Q/DQ kept FP32 as nodes kept
    FP32 by the FP16 converter) -> every quantized layer 'not INT8', with the Cast as the reason."""
    import onnx

    from export.precision import convert_fp16

    trt = onnx.load(str(qdq_files["trt"].path))
    old, _ = convert_fp16(trt, ["attention", "QuantizeLinear", "DequantizeLinear"])
    report = check_fusion(old, "strong", qdq_files["trt"].meta.extra["kept_float_nodes"])
    assert not report.ok and report.counts()["int8"] == 0
    assert all(any("Cast" in r for r in v.reasons) for v in report.failures)
    assert any("right after" in p for p in report.file_problems)


def test_a_file_without_residual_qdq_fails(qdq_files):
    """The pre-issue-18 TensorRT layout (Q/DQ on weighted-layer inputs only): the downsample Adds
    have no quantized input -> 'not INT8' naming the skip tensor."""
    import onnx

    from calibration.graph import producers
    from calibration.placement import residual_adds

    model = onnx.load(str(qdq_files["trt"].path))
    prod = producers(model.graph)
    for add in residual_adds(model.graph):           # undo the residual placement
        for slot, name in enumerate(add.input):
            src = prod.get(name)
            if src is not None and src.op_type == "DequantizeLinear" and prod[src.input[0]].input[0] in prod \
                    and prod[prod[src.input[0]].input[0]].op_type == "Conv":
                add.input[slot] = prod[src.input[0]].input[0]
    report = check_fusion(model, "weak", qdq_files["trt"].meta.extra["kept_float_nodes"])
    failing = [v for v in report.failures if v.op == "Add"]
    assert failing and all("residual input" in v.reasons[-1] and "not quantized" in v.reasons[-1] for v in failing)


def test_residual_slot_is_the_shorter_branch():
    """Downsample block: Add(conv2(relu(conv1(x))), downsample(x)) -> the skip is the downsample."""
    from onnx import helper

    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], name="conv1"),
             helper.make_node("Relu", ["a"], ["b"], name="relu"),
             helper.make_node("Conv", ["b", "w2"], ["c"], name="conv2"),
             helper.make_node("Conv", ["x", "wd"], ["d"], name="down"),
             helper.make_node("Add", ["c", "d"], ["y"], name="add")]
    from calibration.graph import producers
    from calibration.placement import residual_slot

    graph = helper.make_graph(nodes, "g", [], [])
    assert residual_slot(producers(graph), nodes[-1]) == 1
    nodes[-1] = helper.make_node("Add", ["d", "c"], ["y"], name="add")
    graph = helper.make_graph(nodes, "g", [], [])
    assert residual_slot(producers(graph), nodes[-1]) == 0
