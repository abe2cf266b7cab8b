"""OpenVINO backend beyond the shared contract: parity with ONNX Runtime, dispatch, precision hints,
metadata errors, and the apps (segment, benchmark, evaluate options) run through --backend openvino.
Also the one-line FP16-on-CPU note of the ONNX Runtime backend."""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest

from runtime.backends import backend_for, open_backend
from runtime.backends.onnxruntime_backend import cpu_precision_note
from runtime.backends.openvino_backend import hint_note, native_hints
from runtime.errors import ToolkitError
from runtime.tiling import Tiler

pytest.importorskip("openvino", reason="OpenVINO is not installed (pip install -e .[openvino])")

VARIANT = "tiny_cityscapes"


def smooth_frame(h: int, w: int, seed: int = 0) -> np.ndarray:
    import cv2

    small = np.random.default_rng(seed).integers(0, 256, (h // 16 + 1, w // 16 + 1, 3)).astype(np.uint8)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


def copy_with_meta(src: Path, dst: Path, **changes) -> Path:
    """``src`` with its toolkit metadata changed (``drop=True``: removed)."""
    import onnx

    from export.exporter import write_meta
    from runtime.artifact import META_KEY, read_onnx_meta

    proto = onnx.load(str(src))
    if changes.pop("drop", False):
        kept = [p for p in proto.metadata_props if p.key != META_KEY]
        del proto.metadata_props[:]
        proto.metadata_props.extend(kept)
    else:
        write_meta(proto, read_onnx_meta(src).replace(**changes))
    onnx.save(proto, str(dst))
    return dst


@pytest.fixture(scope="module")
def onnx_files(tmp_path_factory):
    import torch

    from export.exporter import export_fp32, resolve_source
    from models import create_model
    from models.checkpoints import save_checkpoint

    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("ov")
    ckpt = save_checkpoint(d / "tiny.pth", create_model(VARIANT))
    src = resolve_source(VARIANT, str(ckpt), False)
    logits, _, _ = export_fp32(src, d, log=lambda *a: None)
    labels, _, _ = export_fp32(src, d / "labels", output="labels", log=lambda *a: None)
    return {"dir": d, "logits": logits, "labels": labels, "ckpt": ckpt}


def test_openvino_matches_onnxruntime_on_a_tiled_frame(onnx_files):
    frame = smooth_frame(150, 260)
    tiler = Tiler()
    with open_backend(onnx_files["logits"]) as ort, \
            open_backend(onnx_files["logits"], backend="openvino", threads=1) as ov:
        a, b = tiler.logits(ort, frame), tiler.logits(ov, frame)
        assert ov.describe()["executed_precision"] == "f32" and ov.precision == "fp32"
    assert np.abs(a - b).max() < 1e-3
    assert float((a.argmax(0) == b.argmax(0)).mean()) >= 0.9999
    assert len(np.unique(a.argmax(0))) > 1


def test_openvino_labels_artifact(onnx_files):
    crop = smooth_frame(64, 128, seed=2)
    with open_backend(onnx_files["labels"], backend="openvino") as ov, open_backend(onnx_files["logits"]) as ort:
        assert ov.output_kind == "labels"
        out = ov(np.zeros(ov.input_shape, np.float32))
        assert out.dtype == np.int32 and out.shape == (1, 64, 128)
        np.testing.assert_array_equal(Tiler().labels(ov, crop), Tiler().labels(ort, crop))


def test_openvino_dispatch_is_opt_in(onnx_files):
    path = str(onnx_files["logits"])
    assert backend_for(path) == "onnxruntime"            # installing OpenVINO changes no default
    assert backend_for(path, "openvino") == backend_for(path, "ov") == "openvino"
    assert open_backend(path, backend="ov").name == "openvino"
    with pytest.raises(ToolkitError, match="takes an .onnx file"):
        open_backend(VARIANT, backend="openvino")
    with pytest.raises(ToolkitError, match="not a openvino artifact"):
        open_backend("model.engine", backend="openvino")
    with pytest.raises(ToolkitError, match="did you mean openvino"):
        open_backend(path, backend="openvno")
    with pytest.raises(ToolkitError, match="unknown OpenVINO precision"):
        open_backend(path, backend="openvino", precision="int4")
    with pytest.raises(ToolkitError, match="bad option"):
        open_backend(path, backend="openvino", providers="cpu")


def test_openvino_metadata_missing_mismatched_and_corrupt(onnx_files):
    d, src = onnx_files["dir"], onnx_files["logits"]
    with pytest.raises(ToolkitError, match="metadata"):
        open_backend(copy_with_meta(src, d / "bare.onnx", drop=True), backend="openvino").__enter__()
    with pytest.raises(ToolkitError, match="class count"):
        open_backend(copy_with_meta(src, d / "k20.onnx", num_classes=20), backend="openvino").__enter__()
    cut = d / "cut.onnx"
    cut.write_bytes(src.read_bytes()[:5000])
    with pytest.raises(ToolkitError, match="OpenVINO cannot load"):
        open_backend(cut, backend="openvino").__enter__()
    with pytest.raises(ToolkitError, match="not found"):
        open_backend(d / "missing.onnx", backend="openvino").__enter__()


def test_precision_hints_are_native_only_where_the_cpu_says_so(onnx_files, capfd):
    assert native_hints(["FP32", "INT8"]) == ["f32"]
    assert native_hints(["FP32", "BF16", "FP16", "INT8"]) == ["f32", "bf16", "f16"]
    assert hint_note("bf16", ["FP32", "INT8"]) and "emulated" in hint_note("bf16", ["FP32", "INT8"])
    assert hint_note("bf16", ["FP32", "BF16"]) is None and hint_note("auto", []) is None
    import openvino as ov

    caps = list(ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    capfd.readouterr()
    with open_backend(onnx_files["logits"], backend="openvino", precision="auto") as b:
        executed = b.describe()["executed_precision"]
        out = b(np.zeros(b.input_shape, np.float32))
    assert np.isfinite(out).all() and out.dtype == np.float32
    # OpenVINO's own default uses bf16 exactly where the CPU reports native bf16
    assert executed == ("bf16" if "BF16" in caps else "f32")
    assert b.precision == ("bf16" if executed == "bf16" else "fp32")
    assert "note:" not in capfd.readouterr().err      # auto never asks for an emulated precision


def test_ort_fp16_on_cpu_prints_one_note(onnx_files, capfd):
    assert cpu_precision_note("fp16", ["CPUExecutionProvider"]).startswith("note: ")
    assert cpu_precision_note("fp16", ["CUDAExecutionProvider", "CPUExecutionProvider"]) is None
    assert cpu_precision_note("fp32", ["CPUExecutionProvider"]) is None
    fp16_labelled = copy_with_meta(onnx_files["logits"], onnx_files["dir"] / "as_fp16.onnx", precision="fp16")
    capfd.readouterr()
    with open_backend(fp16_labelled):
        pass
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no faster than the FP32" in err[0]
    with open_backend(onnx_files["logits"]):
        pass
    assert capfd.readouterr().err == ""


def test_segment_and_benchmark_apps_run_openvino(onnx_files, tmp_path, capsys):
    import cv2
    import json

    from apps import benchmark, segment

    img = tmp_path / "in.png"
    cv2.imwrite(str(img), smooth_frame(100, 200, seed=3))
    out = tmp_path / "seg"
    model = str(onnx_files["logits"])
    assert segment.main([str(img), "--model", model, "--backend", "openvino", "--threads", "1",
                         "--out", str(out)]) == 0
    with open_backend(model) as ort:
        expected = Tiler().labels(ort, cv2.cvtColor(cv2.imread(str(img)), cv2.COLOR_BGR2RGB))
    got = cv2.imread(str(out / "in_trainIds.png"), cv2.IMREAD_UNCHANGED)
    assert (got == expected).mean() >= 0.999
    report = tmp_path / "bench.json"
    assert benchmark.main(["--artifacts", model, "--also-openvino", "--frame", "100x200", "--warmup", "0",
                           "--iters", "1", "--threads", "1", "--no-isolate", "--out", str(report)]) == 0
    rows = json.loads(report.read_text())["results"]
    assert [r["backend"] for r in rows] == ["onnxruntime", "openvino"] and rows[1]["threads"] == 1
    with pytest.raises(ToolkitError, match="only applies to OpenVINO"):
        benchmark.main(["--artifacts", model, "--ov-precision", "bf16", "--out", str(report)])


def test_evaluate_and_model_flags_map_onto_openvino_options():
    from apps.cli import backend_options
    from apps.evaluate import artifact_options

    ev = argparse.Namespace(backend="openvino", providers=None, threads=2, ov_precision="auto", artifacts=["a.onnx"])
    assert artifact_options(ev) == {"threads": 2, "precision": "auto"}
    with pytest.raises(ToolkitError, match="only applies to --backend openvino"):
        artifact_options(argparse.Namespace(**{**vars(ev), "backend": "auto"}))
    with pytest.raises(ToolkitError, match="only applies to ONNX Runtime"):
        artifact_options(argparse.Namespace(**{**vars(ev), "providers": "cpu"}))
    flags = argparse.Namespace(model="a.onnx", checkpoint=None, crop=None, providers=None, device=None,
                               threads=1, ov_precision=None)
    assert backend_options(flags, "openvino") == {"threads": 1, "precision": "f32"}
    with pytest.raises(ToolkitError, match="--ov-precision only applies"):
        backend_options(argparse.Namespace(**{**vars(flags), "ov_precision": "bf16"}), "onnxruntime")
    with pytest.raises(ToolkitError, match="--device does not apply"):
        backend_options(argparse.Namespace(**{**vars(flags), "device": "cpu"}), "openvino")
