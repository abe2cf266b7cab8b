"""export/to_trt.py and the TensorRT builder.

* Version handling (8.6 / 10 / 11) is tested against small stand-ins of the ``tensorrt`` module
  that have exactly the attributes each version documents: flags, routes, parser error listing,
  a failed build reporting the builder log.
* The CLI is tested here without TensorRT: --backend auto / onnxruntime / tensorrt, --onnx, reuse,
  conflicting flags (one-line error, exit 2, no files).
* Real engine builds run only where ``tensorrt`` imports and a CUDA GPU exists.
"""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from runtime.cli import run_cli
from runtime.errors import ToolkitError

TINY = ["--model", "tiny_cityscapes", "--random-init"]


def _status():
    from export.trt_builder import tensorrt_status

    return tensorrt_status()


HAVE_TRT, TRT_REASON = _status()


# --- stand-ins for the tensorrt module, per documented version ------------------------------------
def fake_trt(version: str, parse_ok: bool = True, build_ok: bool = True) -> SimpleNamespace:
    major = int(version.split(".")[0])
    ndf = {"EXPLICIT_BATCH": 0} if major < 11 else {}
    if major >= 10:
        ndf["STRONGLY_TYPED"] = 5 if major == 10 else 1
    flags = {"FP16": 0, "INT8": 1, "OBEY_PRECISION_CONSTRAINTS": 2} if major < 11 else {"REFIT": 3}
    calls: dict = {"flags": [], "network_flags": None}

    class ILogger:
        def __init__(self):
            pass

    class Error:
        def __init__(self, i):
            self.i = i

        def code(self):
            return "UNSUPPORTED_NODE"

        def desc(self):
            return f"problem {self.i}"

        def node(self):
            return self.i

        def node_name(self):
            return f"/node_{self.i}"

        def node_operator(self):
            return "Resize"

    class Parser:
        def __init__(self, network, logger):
            self.num_errors = 0 if parse_ok else 2

        def parse_from_file(self, path):
            return parse_ok

        def get_error(self, i):
            return Error(i)

    class Config:
        def set_memory_pool_limit(self, pool, size):
            calls["workspace"] = size

        def set_flag(self, flag):
            calls["flags"].append(flag)

        def create_timing_cache(self, data):
            return data

        def set_timing_cache(self, cache, ignore):
            calls["timing_cache_in"] = cache

        def get_timing_cache(self):
            return SimpleNamespace(serialize=lambda: b"timing")

    class Builder:
        def __init__(self, logger):
            self.logger = logger

        def create_network(self, flags):
            calls["network_flags"] = flags
            return SimpleNamespace(num_layers=0)

        def create_builder_config(self):
            return Config()

        def build_serialized_network(self, network, config):
            if build_ok:
                return b"ENGINE"
            self.logger.log(SimpleNamespace(name="ERROR"), "out of workspace memory")
            return None

    trt = SimpleNamespace(__version__=version, ILogger=ILogger, Builder=Builder, OnnxParser=Parser,
                          NetworkDefinitionCreationFlag=SimpleNamespace(**ndf),
                          BuilderFlag=SimpleNamespace(**flags), IBuilderConfig=Config,
                          MemoryPoolType=SimpleNamespace(WORKSPACE=0), float32="float32", calls=calls)
    if major < 11:
        trt.IInt8EntropyCalibrator2 = type("IInt8EntropyCalibrator2", (), {"__init__": lambda self: None})
    return trt


@pytest.mark.parametrize("version, fp16_route, int8_route", [
    ("8.6.2", ("fp16", False, ["FP16"]), ("int8-trt", False, ["INT8"])),
    ("10.3.0", ("fp16", True, []), ("int8-trt", True, [])),
    ("11.4.1", ("fp16", True, []), ("int8-trt", True, [])),
])
def test_routes_per_version(version, fp16_route, int8_route):
    from export.trt_builder import Features, plan_build

    feat = Features.detect(fake_trt(version))
    for precision, want in (("fp16", fp16_route), ("int8", int8_route)):
        plan = plan_build(feat, precision, keep_fp32=["/nl_block/Softmax"])
        assert (plan.onnx_role, plan.strongly_typed, plan.flags) == want
    assert plan_build(feat, "fp32").onnx_role == "fp32"
    weak = not feat.strongly_typed
    assert plan_build(feat, "fp16", keep_fp32=["n"]).pin_fp32 == (["n"] if weak else [])


def test_best_and_implicit_need_builder_flags():
    from export.trt_builder import Features, plan_build

    best10 = plan_build(Features.detect(fake_trt("10.3.0")), "int8", best=True, keep_fp32=["a"])
    assert (best10.onnx_role, best10.strongly_typed, best10.flags, best10.pin_fp32) == ("int8-trt", False,
                                                                                     ["INT8", "FP16"], ["a"])
    implicit = plan_build(Features.detect(fake_trt("8.6.2")), "int8", implicit=True)
    assert (implicit.onnx_role, implicit.flags) == ("fp32", ["INT8"])
    feat11 = Features.detect(fake_trt("11.4.1"))
    with pytest.raises(ToolkitError, match="no longer has"):
        plan_build(feat11, "int8", best=True)
    with pytest.raises(ToolkitError, match="removed in TensorRT 11"):
        plan_build(feat11, "int8", implicit=True)


@pytest.mark.parametrize("version, expected_flags", [("8.6.2", 1 << 0), ("10.3.0", (1 << 0) | (1 << 5)),
                                                     ("11.4.1", 1 << 1)])
def test_network_flags_use_what_exists(monkeypatch, tmp_path, version, expected_flags):
    import export.trt_builder as tb

    trt = fake_trt(version)
    monkeypatch.setattr(tb, "import_tensorrt", lambda: trt)
    plan = tb.plan_build(tb.Features.detect(trt), "fp16")
    cache = tmp_path / "timing.cache"
    result = tb.build_engine(tmp_path / "m.onnx", plan, 2.0, cache, progress=lambda *a: None)
    assert result.engine == b"ENGINE" and trt.calls["network_flags"] == expected_flags
    assert trt.calls["workspace"] == 2 << 30 and cache.read_bytes() == b"timing"
    assert trt.calls["flags"] == ([0] if version.startswith("8") else [])   # BuilderFlag.FP16 only on 8.6


def test_parser_errors_listed_in_full(monkeypatch, tmp_path):
    import export.trt_builder as tb

    trt = fake_trt("10.3.0", parse_ok=False)
    monkeypatch.setattr(tb, "import_tensorrt", lambda: trt)
    with pytest.raises(ToolkitError) as err:
        tb.build_engine(tmp_path / "m.onnx", tb.BuildPlan("fp32", True), progress=lambda *a: None)
    text = str(err.value)
    assert "2 error(s)" in text and "/node_0" in text and "problem 1" in text and "Resize" in text


def test_failed_build_reports_builder_log(monkeypatch, tmp_path):
    import export.trt_builder as tb

    trt = fake_trt("8.6.2", build_ok=False)
    monkeypatch.setattr(tb, "import_tensorrt", lambda: trt)
    with pytest.raises(ToolkitError, match="out of workspace memory"):
        tb.build_engine(tmp_path / "m.onnx", tb.BuildPlan("fp32", False), progress=lambda *a: None)


# --- the CLI without TensorRT -------------------------------------------------------------------------
@pytest.mark.skipif(HAVE_TRT, reason="checks the behaviour where TensorRT or a GPU is missing")
def test_backend_tensorrt_without_tensorrt_fails_before_writing(tmp_path, capsys):
    from export.to_trt import main

    code = run_cli(main, TINY + ["--fp16", "--backend", "tensorrt", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: --backend tensorrt but") and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(HAVE_TRT, reason="checks the behaviour where TensorRT or a GPU is missing")
def test_backend_auto_makes_artifacts_and_prints_target_command(tmp_path, capsys):
    from export.to_trt import main

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
    from export.to_trt import main

    model = tmp_path / "m.onnx"
    model.write_bytes(b"")
    assert run_cli(main, ["--onnx", str(model)]) == 2
    assert "cannot build engines" in capsys.readouterr().err


@pytest.mark.parametrize("extra, message", [
    (["--calib-data", "x"], "--calib-data only applies when calibrating"),
    (["--int8"], "--int8 needs calibration images"),
    (["--int8", "--calib-data", "x", "--calib-images", "0"], "--calib-images must be >= 1"),
    (["--int8-implicit"], "--int8-implicit needs --int8"),
    (["--fp16", "--backend", "onnxruntime", "--timing-cache", "t.cache"], "only apply to TensorRT"),
    (["--int8", "--calib-data", "x", "--calib-method", "minmax"], "unknown calibration method"),
    (["--int8", "--calib-data", "missing_dir"], "--calib-data directory not found"),
    (["--fp16", "--data", "missing_dir"], "--data directory not found"),
    (["--fp16", "--keep-fp32", "Softmx"], "did you mean Softmax"),
    (["--fp16", "--crop", "100x100"], "does not fit"),
])
def test_conflicting_or_bad_flags(tmp_path, capsys, extra, message):
    from export.to_trt import main

    out = tmp_path / "out"
    code = run_cli(main, TINY + extra + ["--out", str(out), "--backend", "onnxruntime", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and message in err
    partial = [p for p in out.rglob("*") if p.is_file() and not p.name.startswith("tiny_cityscapes_64x128.")]
    assert partial == []          # at most the verified FP32 file of an earlier stage, never a half file


def test_onnx_and_model_are_exclusive(capsys):
    from export.to_trt import main

    with pytest.raises(SystemExit):
        main(TINY + ["--onnx", "a.onnx"])
    assert "not allowed with argument" in capsys.readouterr().err


# --- real TensorRT -------------------------------------------------------------------------------------
@pytest.mark.trt
@pytest.mark.skipif(not HAVE_TRT, reason=f"needs TensorRT and a CUDA GPU: {TRT_REASON}")
def test_real_fp16_engine_with_sidecar(tmp_path):
    from export.to_trt import main
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

    from export.to_trt import main
    from runtime.artifact import read_sidecar
    from samples.generate import render_scene

    (tmp_path / "imgs").mkdir()
    for i in range(4):
        cv2.imwrite(str(tmp_path / "imgs" / f"{i}.png"), render_scene(np.random.default_rng(i), 96, 200)[0][:, :, ::-1])
    out = tmp_path / "out"
    assert run_cli(main, TINY + ["--int8", "--calib-data", str(tmp_path / "imgs"), "--calib-method", "max",
                                 "--out", str(out), "--backend", "tensorrt", "--quiet"]) == 0
    from export.engines import _strongly_typed

    # strongly typed (10, 11): from the INT8+FP16 file; 8.x: from the TensorRT-layout file, flag INT8
    name, layout = ("int8-fp16", "trt+fp16") if _strongly_typed() else ("int8", "trt")
    meta, build = read_sidecar(out / f"tiny_cityscapes_64x128_{name}.engine")
    assert meta.precision == "int8" and meta.layout == layout and build["verify"]["nonfinite"] == 0


def test_empty_or_corrupt_calibration_data(tmp_path, capsys):
    from export.to_trt import main

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
