"""FP16 / mixed ONNX: FP32 I/O, checker, ORT execution, agreement with FP32 on sample frames,
the non-local affinity kept FP32 by default (and what happens when it is not)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from runtime.errors import ToolkitError

FLOAT, FLOAT16 = 1, 10


@pytest.fixture(scope="module")
def fp32(tmp_path_factory):
    from export.exporter import export_fp32, resolve_source

    out = tmp_path_factory.mktemp("fp16")
    path, meta, _ = export_fp32(resolve_source("tiny_cityscapes", None, True), out, log=lambda *a: None)
    return path, meta


def output_types(model) -> dict[str, int]:
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    g = inferred.graph
    return {vi.name: vi.type.tensor_type.elem_type for vi in list(g.value_info) + list(g.output)}


def test_mixed_fp16_keeps_attention_fp32_and_io_fp32(fp32):
    import onnx

    from export.precision import convert_fp16

    model, kept = convert_fp16(onnx.load(str(fp32[0])))
    onnx.checker.check_model(model, full_check=True)
    types = output_types(model)
    ops = {n.name: n for n in model.graph.node}
    assert sorted(ops[k].op_type for k in kept) == ["MatMul", "MatMul", "Mul", "Softmax"]
    for name in kept:
        assert types[ops[name].output[0]] == FLOAT
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    assert convs and all(types[n.output[0]] == FLOAT16 for n in convs)
    assert model.graph.input[0].type.tensor_type.elem_type == FLOAT
    assert model.graph.output[0].type.tensor_type.elem_type == FLOAT
    weights = {i.name: i.data_type for i in model.graph.initializer}
    assert all(weights[n.input[1]] == FLOAT16 for n in convs)


def test_all_fp16_has_no_fp32_compute(fp32):
    import onnx

    from export.precision import convert_fp16, layout_name, precision_summary

    model, kept = convert_fp16(onnx.load(str(fp32[0])), keep=())
    counts = precision_summary(model)
    assert kept == [] and counts["fp32_nodes"] == 0 and counts["casts"] == 2   # input and output only
    assert layout_name(()) == "all-fp16" and layout_name(("attention",)) == "fp32-attention"


def test_fp16_artifact_runs_in_ort_and_agrees_on_sample_frames(fp32):
    """Through the pipeline step: verified on synthetic street scenes, >= 99.5% pixel agreement."""
    from export.pipeline import Artifact, Verifier, make_fp16
    from export.verify import verification_tiles
    from runtime.artifact import read_onnx_meta
    from runtime.backends import open_backend

    path, meta = fp32
    tiles = verification_tiles(None, meta.crop, meta.mean, meta.std, count=4)
    assert tiles.real_images
    art = make_fp16(Artifact("fp32", path, meta, False), Verifier(path, tiles, True, lambda *a: None),
                    log=lambda *a: None)
    assert art.path.name == "tiny_cityscapes_64x128_fp16.onnx"
    assert art.verify["agreement"] >= 0.995 and art.verify["nonfinite"] == 0
    back = read_onnx_meta(art.path)
    assert back.precision == "fp16" and back.layout == "fp32-attention" and len(back.extra["kept_fp32_nodes"]) == 4
    with open_backend(str(art.path)) as backend:
        out = backend(tiles.tiles[:1])
    assert out.dtype == np.float32 and out.shape == (1, 19, 64, 128)
    again = make_fp16(Artifact("fp32", path, meta, True), Verifier(path, tiles, True, lambda *a: None),
                      log=lambda *a: None)
    assert again.reused and again.meta == back


def attention_graph(scale: float):
    """x (1,16,8) -> theta = x@Wt, phi = x@Wp -> softmax(theta phi^T * s) -> @ x: logits ~1e5."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    wt = numpy_helper.from_array((rng.standard_normal((8, 8)) * 30).astype(np.float32), "wt")
    wp = numpy_helper.from_array((rng.standard_normal((8, 8)) * 30).astype(np.float32), "wp")
    s = numpy_helper.from_array(np.array(scale, np.float32), "s")
    perm = helper.make_node("Transpose", ["phi"], ["phiT"], perm=[0, 2, 1], name="t")
    nodes = [helper.make_node("MatMul", ["x", "wt"], ["theta"], name="mt"),
             helper.make_node("MatMul", ["x", "wp"], ["phi"], name="mp"), perm,
             helper.make_node("MatMul", ["theta", "phiT"], ["aff"], name="aff"),
             helper.make_node("Mul", ["aff", "s"], ["scaled"], name="scale"),
             helper.make_node("Softmax", ["scaled"], ["sm"], axis=-1, name="softmax"),
             helper.make_node("MatMul", ["sm", "x"], ["y"], name="out")]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 8]),
               helper.make_tensor_value_info("aff", TensorProto.FLOAT, [1, 16, 16])]
    graph = helper.make_graph(nodes, "attn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 8])],
                              outputs, [wt, wp, s])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_keeping_the_affinity_fp32_avoids_fp16_overflow():
    """Run with onnx's reference evaluator, which computes every node in its declared type (as a
    strongly typed TensorRT engine does). ORT's CPU provider cannot show this: it has no FP16
    MatMul/Softmax kernels and runs that chain in FP32 whatever the graph says."""
    from onnx.reference import ReferenceEvaluator

    from export.precision import convert_fp16

    model = attention_graph(scale=1.0)
    x = np.random.default_rng(1).standard_normal((1, 16, 8)).astype(np.float32) * 4

    def run(m):
        return ReferenceEvaluator(m).run(None, {"x": x})

    ref, ref_aff = run(model)
    assert np.isfinite(ref).all() and np.abs(ref_aff).max() > 65504     # FP32 is fine, FP16 cannot hold it
    kept_model, kept = convert_fp16(model)
    assert set(kept) == {"aff", "scale", "softmax", "out"}
    y, aff = run(kept_model)
    assert y.dtype == np.float32 and np.isfinite(aff).all()
    np.testing.assert_allclose(y, ref, atol=0.05, rtol=0.01)
    with np.errstate(all="ignore"):
        y16, aff16 = run(convert_fp16(model, keep=())[0])
    assert np.isinf(aff16).any() and not np.isfinite(y16).all()   # overflow -> inf -> NaN after softmax


def test_keep_by_op_type_and_name_and_typo(fp32):
    import onnx

    from export.precision import convert_fp16

    model = onnx.load(str(fp32[0]))
    _, kept = convert_fp16(model, keep=("Resize",))
    assert [n.op_type for n in model.graph.node if n.name in kept] == ["Resize"]
    with pytest.raises(ToolkitError, match="did you mean Softmax"):
        convert_fp16(model, keep=("Softmx",))
