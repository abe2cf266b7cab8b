"""export/to_trt.py and the TensorRT builder.

* Version handling (8.6 / 10 / 11: flags, routes, pinning, timing cache, parser errors, calibrator,
  backend) is tested against the REAL bindings of each version in tests/test_trt_bindings.py.
* The CLI is tested here without TensorRT: --backend auto / onnxruntime / tensorrt, --onnx, reuse,
  conflicting flags (one-line error, exit 2, no files).
* Real engine builds run only where ``tensorrt`` imports and a CUDA GPU exists.
"""
from __future__ import annotations

import json
from pathlib import Path

from types import SimpleNamespace

import pytest

from apps.cli import run_cli
from runtime.errors import ToolkitError

TINY = ["--model", "tiny_cityscapes", "--random-init"]


def _status():
    from export.trt_builder import tensorrt_status

    return tensorrt_status()


HAVE_TRT, TRT_REASON = _status()


# --- the CLI without TensorRT -------------------------------------------------------------------------
@pytest.mark.skipif(HAVE_TRT, reason="checks the behaviour where TensorRT or a GPU is missing")
def test_backend_tensorrt_without_tensorrt_fails_before_writing(tmp_path, capsys):
    from apps.to_trt import main

    code = run_cli(main, TINY + ["--fp16", "--backend", "tensorrt", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: --backend tensorrt but") and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(HAVE_TRT, reason="checks the behaviour where TensorRT or a GPU is missing")
def test_backend_auto_makes_artifacts_and_prints_target_command(tmp_path, capsys):
    from apps.to_trt import main

    out = tmp_path / "out"
    assert run_cli(main, TINY + ["--fp16", "--out", str(out), "--quiet"]) == 0
    text = capsys.readouterr().out
    skipped = [line for line in text.splitlines() if "engine step skipped" in line]
    fp16 = out / "tiny_cityscapes_64x128_fp16.onnx"
    assert len(skipped) == 1 and f"python export/to_trt.py --onnx {fp16} --backend tensorrt" in skipped[0]
    assert fp16.is_file() and (out / "tiny_cityscapes_64x128.onnx").is_file()
    assert "RANDOM INIT" in text
    assert run_cli(main, TINY + ["--fp16", "--out", str(out), "--backend", "onnxruntime"]) == 0
    again = capsys.readouterr().out
    assert again.count("reusing") == 2 and "engine step skipped" not in again
    assert "--backend onnxruntime: ONNX artifacts only" in again


@pytest.mark.skipif(HAVE_TRT, reason="checks the behaviour where TensorRT or a GPU is missing")
def test_onnx_mode_without_tensorrt(tmp_path, capsys):
    from apps.to_trt import main

    model = tmp_path / "m.onnx"
    model.write_bytes(b"")
    assert run_cli(main, ["--onnx", str(model)]) == 2
    assert "cannot build engines" in capsys.readouterr().err


@pytest.mark.parametrize("extra, message", [
    (["--calib-data", "x"], "--calib-data only applies when calibrating"),
    (["--int8"], "--int8 needs calibration images"),
    (["--int8-implicit"], "--int8-implicit needs --int8"),
    (["--fp16", "--backend", "onnxruntime", "--timing-cache", "t.cache"], "only apply to TensorRT"),
    (["--int8", "--calib-data", "x", "--calib-method", "minmax"], "unknown calibration method"),
    (["--int8", "--calib-data", "missing_dir"], "--calib-data directory not found"),
    (["--fp16", "--data", "missing_dir"], "--data directory not found"),
    (["--fp16", "--keep-fp32", "Softmx"], "did you mean Softmax"),
    (["--fp16", "--crop", "100x100"], "does not fit"),
])
def test_conflicting_or_bad_flags(tmp_path, capsys, extra, message):
    from apps.to_trt import main

    out = tmp_path / "out"
    code = run_cli(main, TINY + extra + ["--out", str(out), "--backend", "onnxruntime", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and message in err
    partial = [p for p in out.rglob("*") if p.is_file() and not p.name.startswith("tiny_cityscapes_64x128.")]
    assert partial == []          # at most the verified FP32 file of an earlier stage, never a half file


def test_onnx_and_model_are_exclusive(capsys):
    from apps.to_trt import main

    with pytest.raises(SystemExit):
        main(TINY + ["--onnx", "a.onnx"])
    assert "not allowed with argument" in capsys.readouterr().err


# --- real TensorRT -------------------------------------------------------------------------------------
@pytest.mark.trt
@pytest.mark.skipif(not HAVE_TRT, reason=f"needs TensorRT and a CUDA GPU: {TRT_REASON}")
def test_real_fp16_engine_with_sidecar(tmp_path):
    from apps.to_trt import main
    from runtime.artifact import read_sidecar

    out = tmp_path / "out"
    assert run_cli(main, TINY + ["--fp16", "--out", str(out), "--backend", "tensorrt", "--quiet",
                                 "--timing-cache", str(tmp_path / "timing.cache")]) == 0
    engine = out / "tiny_cityscapes_64x128_fp16.engine"
    meta, build = read_sidecar(engine)
    assert meta.precision == "fp16" and build["tensorrt_version"] and build["gpu_name"]
    assert build["verify"]["agreement"] >= 0.99 and (tmp_path / "timing.cache").is_file()
    assert json.loads(Path(str(engine) + ".json").read_text())["build"]["onnx_sha256"]
    assert run_cli(main, TINY + ["--fp16", "--out", str(out), "--backend", "tensorrt", "--quiet"]) == 0


@pytest.mark.trt
@pytest.mark.skipif(not HAVE_TRT, reason=f"needs TensorRT and a CUDA GPU: {TRT_REASON}")
def test_real_int8_engine_from_qdq(tmp_path):
    import cv2
    import numpy as np

    from apps.to_trt import main
    from runtime.artifact import read_sidecar
    from samples.dataset import render_scene

    (tmp_path / "imgs").mkdir()
    for i in range(4):
        cv2.imwrite(str(tmp_path / "imgs" / f"{i}.png"), render_scene(np.random.default_rng(i), 96, 200)[0][:, :, ::-1])
    out = tmp_path / "out"
    assert run_cli(main, TINY + ["--int8", "--calib-data", str(tmp_path / "imgs"), "--calib-method", "max",
                                 "--out", str(out), "--backend", "tensorrt", "--quiet"]) == 0
    from export.engines import _strongly_typed

    # strongly typed (10, 11): from the _int8_fp16 file; 8.x: from the _int8_trt file, flags INT8+FP16
    name, layout = "int8", ("trt+fp16" if _strongly_typed() else "trt")
    meta, build = read_sidecar(out / f"tiny_cityscapes_64x128_{name}.engine")
    assert meta.precision == "int8" and meta.layout == layout and build["verify"]["nonfinite"] == 0


def test_empty_or_corrupt_calibration_data(tmp_path, capsys):
    from apps.to_trt import main

    empty, corrupt, out = tmp_path / "empty", tmp_path / "corrupt", tmp_path / "out"
    empty.mkdir()
    corrupt.mkdir()
    (corrupt / "frame.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    base = TINY + ["--int8", "--out", str(out), "--backend", "onnxruntime", "--quiet", "--calib-data"]
    assert run_cli(main, base + [str(empty)]) == 2
    err = capsys.readouterr().err
    assert "no images found" in err and err.count("\n") == 1
    assert run_cli(main, base + [str(corrupt)]) == 2
    err = capsys.readouterr().err
    assert "frame.png" in err and err.count("\n") == 1
    assert [p for p in out.rglob("*") if p.is_file()] == []   # the parity check reads the same images


# --- CUDA memory helper and verification fallbacks (no GPU needed) --------------------------------
class _FakeCudart:
    """cudaMallocHost / cudaFreeHost over host memory, as cuda-python returns them: (err, value)."""

    class cudaError_t:
        cudaSuccess = 0

    def __init__(self):
        self.blocks = {}

    def cudaMallocHost(self, nbytes):
        import ctypes
        block = ctypes.create_string_buffer(nbytes)
        self.blocks[ctypes.addressof(block)] = block
        return 0, ctypes.addressof(block)

    def cudaFreeHost(self, ptr):
        return (0 if self.blocks.pop(ptr, None) is not None else 1,)

    def cudaSetDevice(self, device):
        raise RuntimeError("Failed to dlopen libcuda.so.1")    # cuda-python 12.x without a driver


@pytest.mark.parametrize("dtype", ["float16", "float32", "int32"])
def test_pinned_buffers_of_every_engine_dtype(dtype):
    """Bug 4: np.ctypeslib.as_ctypes_type(float16) raises, so FP16 engine I/O crashed on allocation."""
    import numpy as np

    from runtime.backends.cuda_mem import CudaPython

    rt = _FakeCudart()
    cu = CudaPython(rt)
    arr = cu.pinned((1, 19, 4, 8), dtype)
    assert arr.dtype == np.dtype(dtype) and arr.shape == (1, 19, 4, 8) and arr.flags.writeable
    arr[...] = 3
    assert float(arr.sum()) == 3 * arr.size
    cu.free_pinned(arr)
    assert rt.blocks == {}


def test_cuda_runtime_error_becomes_toolkit_error():
    """Bug 3 (in-process half): a RuntimeError from cuda-python is a ToolkitError, not a traceback."""
    from runtime.backends.cuda_mem import CudaPython

    with pytest.raises(ToolkitError, match="Failed to dlopen libcuda.so.1"):
        CudaPython(_FakeCudart()).device_properties(0)


def test_tensorrt_status_survives_runtime_error(monkeypatch):
    import export.trt_builder as tb

    monkeypatch.setattr(tb, "import_tensorrt", lambda: SimpleNamespace(__version__="10.3.0"))
    monkeypatch.setattr(tb, "gpu_info", lambda: (_ for _ in ()).throw(RuntimeError("Failed to dlopen libcuda.so.1")))
    ok, reason = tb.tensorrt_status()
    assert not ok and "Failed to dlopen libcuda.so.1" in reason


def test_pycuda_context_made_current_on_the_inference_thread():
    """Bug 5: the primary context must be current on the thread that runs inference, not only on
    the importing thread (pycuda.autoprimaryctx)."""
    import threading

    from runtime.backends.cuda_mem import PyCuda

    current = threading.local()
    log = []

    class Ctx:
        def push(self):
            current.ctx = self
            log.append(("push", threading.current_thread().name))

    class Context:
        @staticmethod
        def pop():
            log.append(("pop", threading.current_thread().name))
            current.ctx = None

    class Device:
        def __init__(self, i):
            self.i = i

        def retain_primary_context(self):
            log.append(("retain", self.i))
            return Ctx()

    drv = SimpleNamespace(init=lambda: None, Device=Device, Context=Context)
    cu = PyCuda(drv)
    cu.use_device(1)
    seen = {}

    def work():
        with cu.activate():
            seen["inside"] = getattr(current, "ctx", None) is not None
        seen["after"] = getattr(current, "ctx", None)

    t = threading.Thread(target=work, name="inference-worker")
    t.start()
    t.join()
    assert seen == {"inside": True, "after": None}
    assert log == [("retain", 1), ("push", "inference-worker"), ("pop", "inference-worker")]


def test_verification_survives_a_broken_sample_generator(monkeypatch):
    """Bug 9: samples.* failing to import (TypeError on Python 3.8) falls back to noise, says why."""
    import builtins

    from export.verify import verification_tiles

    real_import = builtins.__import__

    def broken(name, *a, **kw):
        if name == "samples.dataset":
            raise TypeError("'type' object is not subscriptable")
        return real_import(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", broken)
    tiles = verification_tiles(None, (16, 32), (0, 0, 0), (1, 1, 1))
    assert tiles.tiles.shape == (2, 3, 16, 32) and not tiles.real_images
    assert "samples.dataset unavailable (TypeError" in tiles.source


def test_engine_kept_when_verification_fails(monkeypatch, tmp_path):
    """Bug 9: a finished engine is never deleted; the sidecar says the verification failed, and
    such an engine is not reused as if verified."""
    import argparse

    import export.engines as eng
    import export.trt_builder as tb
    from runtime.artifact import ArtifactMeta, read_sidecar

    meta = ArtifactMeta(variant="tiny_cityscapes", num_classes=19, class_names=tuple(map(str, range(19))),
                        palette=tuple((i, i, i) for i in range(19)), crop=(64, 128), mean=(0.0,) * 3,
                        std=(1.0,) * 3, precision="fp16")
    onnx = tmp_path / "tiny_cityscapes_64x128_fp16.onnx"
    onnx.write_bytes(b"onnx")
    trt = SimpleNamespace(__version__="10.3.0", NetworkDefinitionCreationFlag=SimpleNamespace(STRONGLY_TYPED=1),
                          BuilderFlag=SimpleNamespace(), IBuilderConfig=SimpleNamespace())
    monkeypatch.setattr(tb, "import_tensorrt", lambda: trt)
    monkeypatch.setattr(tb, "gpu_info", lambda: ("Orin", (8, 7)))
    monkeypatch.setattr(tb, "build_engine", lambda *a, **k: tb.BuildResult(b"ENGINE", 1.0, [], True, []))

    def broken_verify(*a, **k):
        raise TypeError("'type' object is not subscriptable")

    monkeypatch.setattr(eng, "verify_engine", broken_verify)
    art = SimpleNamespace(role="fp16", path=onnx, meta=meta)
    args = argparse.Namespace(workspace=None, timing_cache=None)
    with pytest.raises(TypeError):
        eng.build_one(art, False, None, args, log=lambda *a: None)
    engine = tmp_path / "tiny_cityscapes_64x128_fp16.engine"
    assert engine.read_bytes() == b"ENGINE"
    _meta, build = read_sidecar(engine)
    assert "TypeError" in build["verify"]["failed"]
    assert not eng._engine_reusable(engine, build["build_key"])
