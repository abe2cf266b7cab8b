"""What a Jetson user with only numpy, OpenCV, onnxruntime and tqdm runs (Python 3.8 / JetPack 5,
3.10 / JetPack 6): every toolkit module imports, every artifact kind loads in that ONNX Runtime
(1.16/1.17 refuse unused opset domains and IR > 9) and runs, and the segment and video demo CLIs
work on each kind. The artifacts come from the main Python (conftest.py)."""
from __future__ import annotations

import importlib
import os
import pkgutil
import sys

import numpy as np
import pytest

from tests.py38.conftest import KINDS, artifact

OPTIONAL = {"torch", "torchvision", "onnx", "onnxsim", "tensorrt", "cuda", "pycuda", "openvino", "nncf",
            "triton_python_backend_utils"}   # the last exists only inside Triton's Python backend


def test_the_environment_is_the_one_named():
    """The job's interpreter and the absence of torch / onnx (a Jetson user's environment)."""
    want = os.environ.get("NONLOCALNET_PY38_EXPECT")
    if want:
        assert "%d.%d" % sys.version_info[:2] == want
    for name in ("torch", "onnx"):
        with pytest.raises(ImportError):
            importlib.import_module(name)


def test_every_toolkit_module_imports():
    failed = []
    for pkg in ("runtime", "calibration", "samples", "export"):
        for info in pkgutil.walk_packages(importlib.import_module(pkg).__path__, pkg + "."):
            try:
                importlib.import_module(info.name)
            except ModuleNotFoundError as exc:
                if (exc.name or "").split(".")[0] not in OPTIONAL:
                    failed.append(f"{info.name}: {exc}")
            except Exception as exc:  # a TypeError from a 3.9+ construct is what this test is for
                failed.append(f"{info.name}: {type(exc).__name__}: {exc}")
    assert failed == []


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_artifact_loads_and_runs_in_this_onnx_runtime(built, kind):
    from runtime.backends import open_backend
    from runtime.preprocess import normalize, read_image

    path = artifact(built, kind)
    with open_backend(str(path)) as backend:
        meta = backend.meta
        x = normalize(read_image(built / "images" / "scene_0.png"), meta.mean, meta.std)[None, :, :64, :128]
        out = backend(np.ascontiguousarray(x, dtype=np.float32))
    assert backend.name == "onnxruntime" and out.shape == (1, 19, 64, 128) and np.isfinite(out).all()
    expected = {"fp32": ("fp32", ""), "fp16": ("fp16", "fp32-attention"), "int8_trt": ("int8", "trt"),
                "int8_ort": ("int8", "ort"), "int8_fp16": ("int8", "trt+fp16")}[kind]
    assert (meta.precision, meta.layout) == expected
    with open_backend(str(artifact(built, "fp32"))) as ref:
        agree = (ref(np.ascontiguousarray(x, dtype=np.float32)).argmax(1) == out.argmax(1)).mean()
    assert agree > 0.9


def test_the_int8_file_this_jetpack_builds_loads_and_names_its_tensorrt(built):
    """JetPack 5 (Python 3.8, ONNX Runtime 1.16, TensorRT 8.5) builds from _int8_trt (opset 17, FP32
    scales); JetPack 6.1+ (Python 3.10, ONNX Runtime 1.17, TensorRT 10.3) from _int8_fp16 (opset 19,
    FP16 scales). The file says which TensorRT it is for, and this ONNX Runtime runs it."""
    from runtime.artifact import read_onnx_meta
    from runtime.backends import open_backend

    kind, typing = ("int8_trt", "weak") if sys.version_info[:2] == (3, 8) else ("int8_fp16", "strong")
    meta = read_onnx_meta(artifact(built, kind))
    assert meta.extra["trt_target"]["typing"] == typing
    assert meta.extra["fusion"]["not_int8"] == 0 and meta.extra["fusion"]["int8"] > 5
    with open_backend(str(artifact(built, kind))) as backend:
        out = backend(np.zeros(backend.input_shape, np.float32))
    assert np.isfinite(out).all()


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_segment_cli(built, kind, tmp_path):
    from runtime.segment import main

    out = tmp_path / "seg"
    assert main([str(built / "images" / "scene_1.png"), "--model", str(artifact(built, kind)), "--out", str(out)]) == 0
    assert {p.name for p in out.iterdir()} >= {"scene_1_trainIds.png", "scene_1_color.png", "scene_1_labelIds.png"}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_video_demo_cli(built, kind, tmp_path):
    import cv2

    from apps.cli import run_cli
    from runtime.video_demo import main

    rec = tmp_path / "demo.avi"
    argv = [str(built / "images"), "--model", str(artifact(built, kind)), "--headless", "--max-frames", "3",
            "--output", str(rec)]
    assert run_cli(main, argv) == 0
    cap = cv2.VideoCapture(str(rec))
    frames = 0
    while cap.read()[0]:
        frames += 1
    cap.release()
    assert frames == 3
