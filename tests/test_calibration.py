"""Calibration set (seeded, runtime-tiled, cached by content hash) and INT8 Q/DQ artifacts:
TensorRT layout rules, ORT fused integer kernels, determinism, cache reuse, bad inputs."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from runtime.errors import ToolkitError

CROP = (64, 128)
MEAN = (123.675, 116.28, 103.53)
STD = (58.395, 57.12, 57.375)
QUIET = lambda *a: None  # noqa: E731


def write_images(folder: Path, n: int, hw=(96, 200), seed: int = 0) -> list[Path]:
    import cv2

    from samples.generate import render_scene

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        rgb, _ = render_scene(np.random.default_rng([seed, i]), *hw)
        paths.append(folder / f"img_{i:03d}.png")
        cv2.imwrite(str(paths[-1]), rgb[:, :, ::-1])
    return paths


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("calib_images")
    write_images(folder, 6)
    return folder


def build(root, cache, **kw):
    from calibration.calibset import build_calibration_set

    kw.setdefault("max_images", 4)
    return build_calibration_set(root, CROP, MEAN, STD, cache, progress=False, **kw)


def test_calibration_set_is_deterministic_and_runtime_tiled(images, tmp_path):
    from runtime.preprocess import normalize, read_image
    from runtime.tiling import extract_tiles

    a = build(images, tmp_path / "a")
    b = build(images, tmp_path / "b")
    assert a.key == b.key and len(a) == len(b) == 4 and a.n_images == 4 and not a.reused
    assert all(np.array_equal(a.tile(i), b.tile(i)) for i in range(len(a)))
    tiles, _ = extract_tiles(normalize(read_image(images / a.sources[0]), MEAN, STD), CROP)
    assert any(np.array_equal(t, a.tile(0)) for t in tiles)       # bit-identical to the runtime's tiles
    assert build(images, tmp_path / "c", seed=1).key != a.key
    assert len(build(images, tmp_path / "d", max_images=2, max_tiles=5)) == 5    # several tiles per image


def test_cache_reused_without_decoding_and_invalidated_by_changes(images, tmp_path, monkeypatch):
    import runtime.preprocess as pre

    first = build(images, tmp_path)
    monkeypatch.setattr(pre, "read_image", lambda p: (_ for _ in ()).throw(AssertionError("decoded")))
    again = build(images, tmp_path)
    assert again.reused and again.path == first.path and again.key == first.key
    assert [p.name for p in tmp_path.iterdir()] == [first.path.name]        # atomic: no temp files left
    monkeypatch.undo()
    os.utime(images / first.sources[0], ns=(1, 1))                           # touched image -> new set
    assert build(images, tmp_path).key != first.key


def test_small_images_are_padded_like_the_runtime(tmp_path):
    from runtime.preprocess import normalize, read_image
    from runtime.tiling import extract_tiles

    write_images(tmp_path / "small", 2, hw=(40, 100))
    cs = build(tmp_path / "small", tmp_path / "cache")
    ref, _ = extract_tiles(normalize(read_image(tmp_path / "small" / cs.sources[0]), MEAN, STD), CROP)
    assert np.array_equal(ref[0], cs.tile(0)) and (cs.tile(0)[:, 40:, :] == 0).all()


def test_bad_calibration_inputs(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ToolkitError, match="no images found|no calibration images"):
        build(tmp_path / "empty", tmp_path / "c")
    with pytest.raises(ToolkitError, match="not found"):
        build(tmp_path / "missing", tmp_path / "c")
    bad = tmp_path / "corrupt"
    write_images(bad, 1)
    (bad / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    with pytest.raises(ToolkitError, match="broken.png"):
        build(bad, tmp_path / "c")
    with pytest.raises(ToolkitError, match="at least one image"):
        build(tmp_path / "empty", tmp_path / "c", max_images=0)
    assert not (tmp_path / "c").exists() or list((tmp_path / "c").iterdir()) == []


@pytest.fixture(scope="module")
def int8(tmp_path_factory, images):
    """Both INT8 artifacts of the tiny variant (max calibration, 4 tiles) through the pipeline."""
    from export.pipeline import Artifact, CalibRequest, Verifier, calibration_set, make_int8
    from export.to_onnx import export_fp32, resolve_source
    from export.verify import verification_tiles

    out = tmp_path_factory.mktemp("int8")
    path, meta, _ = export_fp32(resolve_source("tiny_cityscapes", None, True), out, log=QUIET)
    fp32 = Artifact("fp32", path, meta, False)
    req = CalibRequest(str(images), "max", None, max_images=4)
    calib = calibration_set(fp32, req, progress=False)
    verifier = Verifier(path, verification_tiles(str(images), meta.crop, meta.mean, meta.std), False, QUIET)
    lines: list[str] = []
    trt, ort_art, mixed = make_int8(fp32, calib, req, verifier, log=lines.append, progress=False)
    return {"fp32": fp32, "calib": calib, "req": req, "verifier": verifier, "trt": trt, "ort": ort_art,
            "mixed": mixed, "lines": lines}


def test_trt_layout_rules(int8):
    import onnx
    from onnx import TensorProto, numpy_helper

    from calibration.qdq import trt_layout_problems

    model = onnx.load(str(int8["trt"].path))
    assert trt_layout_problems(model) == []
    assert next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 13
    inits = {i.name: i for i in model.graph.initializer}
    nodes = model.graph.node
    zps = [inits[n.input[2]] for n in nodes if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert zps and all(z.data_type == TensorProto.INT8 and not numpy_helper.to_array(z).any() for z in zps)
    assert not any(inits[n.input[0]].data_type == TensorProto.INT32 for n in nodes
                   if n.op_type == "DequantizeLinear" and n.input[0] in inits)            # bias stays float
    producer = {o: n for n in nodes for o in n.output}
    conv_w = [n.input[1] for n in nodes if n.op_type == "Conv"]
    quantized_w = [producer[w] for w in conv_w if w in producer and producer[w].op_type == "DequantizeLinear"]
    assert quantized_w, "Conv weights must be fed by DequantizeLinear"
    for dq in quantized_w:
        scale = numpy_helper.to_array(inits[dq.input[1]])
        axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
        assert scale.ndim == 1 and scale.size > 1 and axis == 0                # per-channel, axis 0
    # inputs-only: no Conv output goes straight into a QuantizeLinear
    assert not any(n.op_type == "QuantizeLinear" and producer.get(n.input[0]) is not None
                   and producer[n.input[0]].op_type == "Conv" for n in nodes)
    # the non-local affinity is not quantized
    for n in nodes:
        if n.op_type in ("Softmax", "MatMul"):
            assert all(producer.get(i) is None or producer[i].op_type != "DequantizeLinear" for i in n.input)


def test_ort_layout_fuses_integer_kernels(int8):
    from calibration.qdq import fused_ops, integer_kernel_count

    counts = fused_ops(int8["ort"].path)
    assert counts.get("QLinearConv", 0) >= 20 and integer_kernel_count(counts) >= 20
    # the affinity stays float in this layout too: no MatMulIntegerToFloat, both MatMuls float
    assert counts.get("MatMulIntegerToFloat", 0) == 0 and counts.get("MatMul", 0) == 2
    assert int8["ort"].meta.layout == "ort" and int8["trt"].meta.layout == "trt"
    assert any("integer kernels" in line for line in int8["lines"])


def test_int8_artifacts_run_and_carry_metadata(int8):
    from runtime.artifact import read_onnx_meta
    from runtime.backends import open_backend

    for art in (int8["trt"], int8["ort"]):
        meta = read_onnx_meta(art.path)
        assert meta.precision == "int8" and meta.extra["calibration"]["method"] == "max"
        assert meta.extra["calibration"]["tiles"] == 4 and meta.extra["verify"]["nonfinite"] == 0
        with open_backend(str(art.path)) as backend:
            out = backend(int8["calib"].tile(0)[None])
        assert out.shape == (1, 19, 64, 128) and np.isfinite(out).all()


def test_int8_rerun_reuses_ranges_and_artifacts(int8):
    from export.pipeline import make_int8

    lines: list[str] = []
    trt, ort_art, mixed = make_int8(int8["fp32"], int8["calib"], int8["req"], int8["verifier"], log=lines.append,
                                    progress=False)
    assert trt.reused and ort_art.reused and mixed.reused
    assert sum(line.startswith("reusing") for line in lines) == 3
    assert trt.path.stat().st_mtime_ns == int8["trt"].path.stat().st_mtime_ns


def test_calibration_methods_are_deterministic(int8, tmp_path):
    from onnxruntime.quantization.calibrate import load_tensors_data

    from calibration.qdq import compute_ranges, parse_method, preprocess

    pre = tmp_path / "pre.onnx"
    preprocess(int8["fp32"].path, pre)
    ranges = {}
    for text in ("percentile", "percentile", "max", "entropy"):
        method, pct = parse_method(text)
        out = tmp_path / f"{text}_{len(ranges)}.json"
        assert compute_ranges(pre, int8["calib"], method, pct, out, progress=False)
        assert not compute_ranges(pre, int8["calib"], method, pct, out, progress=False)    # cached
        data = load_tensors_data(out)
        ranges.setdefault(text, []).append({k: tuple(float(np.ravel(r)[0]) for r in v.range_value)
                                            for k, v in data.items()})
    assert ranges["percentile"][0] == ranges["percentile"][1]                              # deterministic
    wide, clipped = ranges["max"][0], ranges["entropy"][0]
    assert wide.keys() == clipped.keys()
    assert all(wide[k][0] <= clipped[k][0] + 1e-6 and clipped[k][1] <= wide[k][1] + 1e-6 for k in wide)
    assert any(clipped[k][1] < wide[k][1] - 1e-6 for k in wide)                          # entropy clips
    assert parse_method("percentile-99.999") == ("percentile", 99.999)
    for bad in ("minmax", "percentile-99", "max-1"):
        with pytest.raises(ToolkitError):
            parse_method(bad)


def test_legacy_calibration_cache_is_atomic(tmp_path, int8):
    from calibration.trt_calibrator import BatchFeeder, read_cache, write_cache

    cache = tmp_path / "trt.cache"
    assert read_cache(cache) is None
    write_cache(cache, memoryview(b"TRT-8601-EntropyCalibration2\ninput: 3c010a14\n"))
    assert read_cache(cache).startswith(b"TRT-") and [p.name for p in tmp_path.iterdir()] == ["trt.cache"]
    feeder = BatchFeeder(int8["calib"], 3)
    shapes = []
    while (batch := feeder.next()) is not None:
        shapes.append(batch.shape)
        assert batch.dtype == np.float32 and batch.flags["C_CONTIGUOUS"]
    assert shapes == [(3, 3, 64, 128), (3, 3, 64, 128)]


def test_attention_scale_folding_keeps_the_output(int8):
    import onnx
    import onnxruntime as ort

    from calibration.graph import fold_attention_scale, producers

    model = onnx.load(str(int8["fp32"].path))
    folded = onnx.ModelProto()
    folded.CopyFrom(model)
    assert fold_attention_scale(folded.graph) == 1
    onnx.checker.check_model(folded, full_check=True)
    prod = producers(folded.graph)
    soft = next(n for n in folded.graph.node if n.op_type == "Softmax")
    matmul = prod[soft.input[0]]
    assert matmul.op_type == "MatMul" and prod[matmul.input[0]].op_type == "Mul"
    x = int8["calib"].tile(0)[None]

    def run(m):
        return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]

    np.testing.assert_allclose(run(folded), run(model), rtol=1e-4, atol=1e-4)


def _elem_types(model):
    import onnx

    g = onnx.shape_inference.infer_shapes(model, strict_mode=True).graph
    types = {v.name: v.type.tensor_type.elem_type for v in list(g.value_info) + list(g.input) + list(g.output)}
    types.update({i.name: i.data_type for i in g.initializer})
    return types


def test_int8_fp16_artifact_is_mixed_and_follows_the_qdq_rules(int8):
    """INT8 Q/DQ convolutions (same ones as the TensorRT layout), other layers FP16, the affinity
    FP32, FP32 I/O; passes the Q/DQ rule check; runs in ONNX Runtime close to the INT8 file."""
    import onnx
    from onnx import TensorProto

    from calibration.qdq import trt_layout_problems
    from runtime.artifact import read_onnx_meta
    from runtime.backends import open_backend

    mixed, trt = int8["mixed"], int8["trt"]
    assert mixed.path.name == "tiny_cityscapes_64x128_int8_fp16.onnx" and mixed.role == "int8-fp16"
    meta = read_onnx_meta(mixed.path)
    assert (meta.precision, meta.layout) == ("int8", "trt+fp16") and meta.extra["verify"]["nonfinite"] == 0
    model = onnx.load(str(mixed.path))
    assert trt_layout_problems(model) == []
    types = _elem_types(model)
    assert [types[t.name] for t in list(model.graph.input) + list(model.graph.output)] == [TensorProto.FLOAT] * 2
    count = lambda m, op: sum(n.op_type == op for n in m.graph.node)  # noqa: E731
    ref = onnx.load(str(trt.path))
    assert count(model, "QuantizeLinear") == count(ref, "QuantizeLinear") > 20
    by_op: dict[str, set] = {}
    for node in model.graph.node:
        by_op.setdefault(node.op_type, set()).update(types[o] for o in node.output)
    assert by_op["Softmax"] == by_op["MatMul"] == {TensorProto.FLOAT}                 # affinity FP32
    assert by_op["Conv"] == by_op["Relu"] == by_op["Add"] == {TensorProto.FLOAT16}     # the rest FP16
    assert set(meta.extra["kept_fp32_nodes"]) == {n.name for n in model.graph.node if n.op_type in ("Softmax", "MatMul")}
    x = int8["calib"].tile(0)[None]
    with open_backend(str(mixed.path)) as a, open_backend(str(trt.path)) as b:
        out, ref_out = a(x), b(x)
    assert out.shape == (1, 19, 64, 128) and np.isfinite(out).all()
    assert (out.argmax(1) == ref_out.argmax(1)).mean() > 0.98


def test_every_int8_file_declares_only_the_domains_it_uses(int8):
    """ONNX Runtime 1.16/1.17 (JetPack 5) refuse unused domains such as ai.onnx.ml 5 and IR > 9."""
    import onnx

    for art in (int8["fp32"], int8["trt"], int8["ort"], int8["mixed"]):
        model = onnx.load(str(art.path))
        assert [(o.domain, o.version) for o in model.opset_import] == [("", 17)], art.path.name
        assert model.ir_version == 8, art.path.name


def _conv_qdq_model(**bad):
    """A Conv with Q/DQ on input and weight in the TensorRT layout; ``bad`` breaks one rule."""
    from onnx import TensorProto, helper, numpy_helper

    f16 = bad.get("fp16_input")
    w = np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32)
    wscale = np.full(1 if bad.get("per_tensor") else 4, 0.02, np.float32)
    zp = np.array(3 if bad.get("zero_point") else 0, np.int8)
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(wscale, "ws"),
             numpy_helper.from_array(np.zeros(4, np.int8), "wz"), numpy_helper.from_array(zp, "xz"),
             numpy_helper.from_array(np.array(0.05, np.float32), "xs"),
             numpy_helper.from_array(np.zeros(4, np.int32), "b32"), numpy_helper.from_array(np.array(0.1, np.float32), "bs")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "xs"] + ([] if bad.get("no_zero_point") else ["xz"]), ["xq"], name="qx"),
             helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"], name="dqx"),
             helper.make_node("QuantizeLinear", ["w", "ws", "wz"], ["wq"], name="qw", axis=0),
             helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["wd"], name="dqw", axis=0)]
    conv_in = ["xd", "wd"]
    if bad.get("bias"):
        nodes.append(helper.make_node("DequantizeLinear", ["b32", "bs"], ["bd"], name="dqb"))
        conv_in.append("bd")
    if bad.get("orphan_q"):
        nodes.append(helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["lost"], name="q_orphan"))
    if bad.get("orphan_dq"):
        nodes.append(helper.make_node("DequantizeLinear", ["nowhere", "xs", "xz"], ["dangling"], name="dq_orphan"))
    nodes.append(helper.make_node("Conv", conv_in, ["y"], name="conv", pads=[1, 1, 1, 1]))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT16 if f16 else
                                                                         TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("bad, message", [
    ({}, None),
    ({"zero_point": True}, "zero point not INT8 0"),
    ({"no_zero_point": True}, "no zero point"),
    ({"per_tensor": True}, "weight scale not per-channel on axis 0"),
    ({"bias": True}, "INT32 (bias) DequantizeLinear"),
    ({"orphan_q": True}, "QuantizeLinear not followed by DequantizeLinear"),
    ({"orphan_dq": True}, "DequantizeLinear fed by nothing"),
    ({"fp16_input": True}, "type"),
])
def test_qdq_rule_check_names_each_violation(bad, message):
    from calibration.qdq import trt_layout_problems

    problems = trt_layout_problems(_conv_qdq_model(**bad))
    if message is None:
        assert problems == []
    else:
        assert any(message in p for p in problems), problems


def test_ort_layout_attention_reads_float_and_no_qdq_is_orphaned(int8):
    import onnx

    from calibration.graph import attention_nodes, producers
    from calibration.qdq import _qdq_wiring_problems

    model = onnx.load(str(int8["ort"].path))
    prod = producers(model.graph)
    chain = set(attention_nodes(model.graph))
    assert len(chain) == 3
    for node in model.graph.node:
        if node.name in chain:
            assert all(prod.get(i) is None or prod[i].op_type != "DequantizeLinear" for i in node.input), node.name
    orphans = [p for p in _qdq_wiring_problems(model) if "quantized bias" not in p]   # INT32 bias: ORT layout
    assert orphans == []
    used = {i for n in model.graph.node for i in n.input}
    assert all(init.name in used for init in model.graph.initializer)        # no stale scales left
