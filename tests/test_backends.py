"""Backend contract over PyTorch / ONNX Runtime / TensorRT, PyTorch-vs-ORT parity, metadata checks."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from runtime.artifact import ArtifactMeta, sidecar_path
from runtime.backends import open_backend
from runtime.backends.tensorrt_backend import check_build
from runtime.errors import ToolkitError
from runtime.tiling import Tiler

from tests.conftest import ROOT, VARIANT, synthetic_frame, variant_meta, with_meta  # noqa: F401


def tensorrt_skip_reason() -> str | None:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "TensorRT is not installed (pip install tensorrt, or JetPack on a Jetson)"
    from runtime.backends.cuda_mem import _import_cudart
    rt = _import_cudart()
    if rt is None:
        return "cuda-python is not installed (needed for the TensorRT backend's device memory)"
    err, count = rt.cudaGetDeviceCount()
    if err != rt.cudaError_t.cudaSuccess or count < 1:
        return "no CUDA GPU visible"
    return None


def build_engine(onnx_path: Path, meta: ArtifactMeta) -> Path:
    """Minimal engine build for the contract test (runs only where TensorRT and a GPU exist)."""
    import tensorrt as trt

    from runtime.backends.cuda_mem import open_cuda
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH) \
        if hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH") else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    assert parser.parse_from_file(str(onnx_path)), [parser.get_error(i) for i in range(parser.num_errors)]
    plan = builder.build_serialized_network(network, builder.create_builder_config())
    engine = onnx_path.with_suffix(".engine")
    engine.write_bytes(bytes(plan))
    gpu, cc = open_cuda().device_properties(0)
    build = {"tensorrt_version": trt.__version__, "gpu_name": gpu, "compute_capability": f"{cc[0]}.{cc[1]}"}
    sidecar_path(engine).write_text(json.dumps({"meta": meta.to_dict(), "build": build}))
    return engine


def openvino_skip_reason() -> str | None:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return "OpenVINO is not installed (pip install -e .[openvino])"
    return None


def artifact_for(kind: str, tiny) -> tuple[str, dict]:
    if kind == "torch":
        return VARIANT, {"checkpoint": str(tiny["ckpt"])}
    if kind == "onnxruntime":
        return str(tiny["onnx"]), {}
    if kind == "openvino":
        if openvino_skip_reason():
            pytest.skip(openvino_skip_reason())
        return str(tiny["onnx"]), {"backend": "openvino", "threads": 1}
    reason = tensorrt_skip_reason()
    if reason:
        pytest.skip(reason)
    return str(build_engine(tiny["onnx"], variant_meta(tiny["model"]))), {}


@pytest.mark.parametrize("kind", ["torch", "onnxruntime", "openvino", pytest.param("tensorrt", marks=[pytest.mark.trt, pytest.mark.gpu])])
def test_backend_contract(kind, tiny):
    artifact, opts = artifact_for(kind, tiny)
    backend = open_backend(artifact, **opts)
    assert backend.name == kind
    with pytest.raises(ToolkitError, match="not open"):
        backend.meta
    with backend as b:
        assert b.input_shape == (1, 3, 64, 128) and b.num_classes == 19
        assert b.precision == "fp32" and b.output_kind == "logits" and b.meta.variant == VARIANT
        x = np.random.default_rng(0).normal(size=b.input_shape).astype(np.float32)
        out = b(x)
        assert isinstance(out, np.ndarray) and out.dtype == np.float32 and out.shape == (1, 19, 64, 128)
        assert np.isfinite(out).all()
        np.testing.assert_allclose(b(x), out, rtol=1e-5, atol=1e-5)   # deterministic
        with pytest.raises(ToolkitError, match="wrong shape"):
            b(np.zeros((1, 3, 32, 128), np.float32))
        with pytest.raises(ToolkitError, match="wrong shape"):
            b(x.astype(np.float64))
        json.dumps(b.describe())
    backend.close()          # safe twice
    with pytest.raises(ToolkitError, match="not open"):
        backend(x)


def test_pytorch_and_onnxruntime_agree_on_a_tiled_frame(tiny):
    frame = synthetic_frame(150, 260)
    tiler = Tiler()
    with open_backend(VARIANT, model=tiny["model"]) as ref, open_backend(tiny["onnx"]) as ort:
        a, b = tiler.logits(ref, frame), tiler.logits(ort, frame)
    agreement = float((a.argmax(0) == b.argmax(0)).mean())
    assert agreement >= 0.9999, agreement
    assert np.abs(a - b).max() < 1e-3
    assert len(np.unique(a.argmax(0))) > 1      # the comparison is not over a constant map


def test_labels_artifact_matches_logits_artifact(tiny):
    frame = synthetic_frame(100, 150, seed=1)
    with open_backend(tiny["onnx"]) as lo, open_backend(tiny["labels_onnx"]) as la:
        assert la.output_kind == "labels"
        out = la(np.zeros(la.input_shape, np.float32))
        assert out.dtype == np.int32 and out.shape == (1, 64, 128)
        # whole-crop frame: no overlap, so labels == argmax of the logits
        crop = synthetic_frame(64, 128, seed=2)
        np.testing.assert_array_equal(Tiler().labels(la, crop), Tiler().labels(lo, crop))
        agree = (Tiler().labels(la, frame) == Tiler().labels(lo, frame)).mean()
    assert agree > 0.9


def test_onnx_metadata_mismatch_missing_and_corrupt(tiny):
    d = tiny["dir"]
    src, meta = tiny["onnx"], tiny["meta"]
    with pytest.raises(ToolkitError, match="class count"):
        open_backend(with_meta(src, d / "wrong.onnx", meta.replace(num_classes=20))).__enter__()
    with pytest.raises(ToolkitError, match="input shape"):
        open_backend(with_meta(src, d / "wrong_crop.onnx", meta.replace(crop=(64, 64)))).__enter__()
    bare = with_meta(src, d / "bare.onnx", None)
    with pytest.raises(ToolkitError, match="metadata"):
        open_backend(bare).__enter__()
    cut = d / "cut.onnx"
    cut.write_bytes(tiny["onnx"].read_bytes()[:5000])
    with pytest.raises(ToolkitError, match="cannot read ONNX file .*cut.onnx.*truncated"):
        open_backend(cut).__enter__()
    with pytest.raises(ToolkitError, match="not found"):
        open_backend(d / "missing.onnx").__enter__()


def test_onnxruntime_provider_and_options_errors(tiny):
    with pytest.raises(ToolkitError, match="onnxruntime-gpu"):
        open_backend(tiny["onnx"], providers="cuda").__enter__()
    with pytest.raises(ToolkitError, match="bad option"):
        open_backend(tiny["onnx"], device="cuda")
    with open_backend(tiny["onnx"], threads=1) as b:
        assert b.describe()["providers"] == ["CPUExecutionProvider"]


def test_open_backend_dispatch_and_did_you_mean(tiny):
    assert open_backend(VARIANT).name == "torch"
    assert open_backend(tiny["onnx"]).name == "onnxruntime"
    assert open_backend("x.plan").name == "tensorrt"
    with pytest.raises(ToolkitError, match="did you mean onnxruntime"):
        open_backend(tiny["onnx"], backend="onxruntime")
    with pytest.raises(ToolkitError, match="did you mean tiny_cityscapes"):
        open_backend("tiny_citiscapes")
    with pytest.raises(ToolkitError, match="not a onnxruntime artifact"):
        open_backend("a.engine", backend="onnxruntime")
    with pytest.raises(ToolkitError, match="cannot tell"):
        open_backend("model.pt")


def test_tensorrt_engine_checks(tiny, tmp_path):
    engine = tmp_path / "tiny.engine"
    engine.write_bytes(b"not an engine")
    with pytest.raises(ToolkitError, match="sidecar not found"):
        open_backend(engine).__enter__()
    sidecar_path(engine).write_text(json.dumps({"meta": variant_meta(tiny["model"]).to_dict(), "build": {}}))
    if tensorrt_skip_reason() and "TensorRT is not installed" in tensorrt_skip_reason():
        with pytest.raises(ToolkitError, match="TensorRT is not installed: pip install tensorrt") as info:
            open_backend(engine).__enter__()
        assert "\n" not in str(info.value)
    build = {"tensorrt_version": "10.3.0", "gpu_name": "Orin", "compute_capability": "8.7"}
    check_build(build, "10.3.0", "Orin", (8, 7), "e")
    with pytest.raises(ToolkitError, match="another TensorRT version"):
        check_build(build, "10.16.0", "Orin", (8, 7), "e")
    with pytest.raises(ToolkitError, match="another GPU architecture"):
        check_build(build, "10.3.0", "NVIDIA H100", (9, 0), "e")
    with pytest.raises(ToolkitError, match="another GPU model"):
        check_build(build, "10.3.0", "Xavier", (8, 7), "e")


def test_torch_bf16_note_only_on_cpus_without_bf16_hardware(monkeypatch):
    from runtime import sysinfo
    from models.backend import bf16_note

    monkeypatch.setattr(sysinfo, "native_bf16", lambda features=None: False)
    assert "emulated" in bf16_note("bf16", "cpu")
    assert bf16_note(None, "cpu") is None and bf16_note("bf16", "cuda") is None
    monkeypatch.setattr(sysinfo, "native_bf16", lambda features=None: True)
    assert bf16_note("bf16", "cpu") is None


def test_torch_autocast_bf16_returns_float32(tiny):
    with open_backend(VARIANT, model=tiny["model"], autocast="bf16") as b:
        assert b.precision == "bf16"
        out = b(np.zeros(b.input_shape, np.float32))
    assert out.dtype == np.float32 and np.isfinite(out).all()
    with pytest.raises(ToolkitError, match="autocast"):
        open_backend(VARIANT, autocast="int4")


def test_runtime_path_imports_no_torch(tiny):
    code = ("import sys, numpy as np\n"
            "from runtime.backends import open_backend\nfrom runtime.tiling import Tiler\n"
            "import apps.evaluate, apps.benchmark, runtime.backends.tensorrt_backend\n"
            f"with open_backend({str(tiny['onnx'])!r}) as b:\n"
            "    print(Tiler().labels(b, np.zeros((70, 130, 3), np.uint8)).shape)\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "(70, 130)" in res.stdout
