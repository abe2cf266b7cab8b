"""FP32 ONNX export: checker, parity with PyTorch, metadata round trip, labels output, reuse,
atomic writes and every bad input (one-line error, exit 2, no partial files)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from apps.cli import run_cli
from runtime.errors import ToolkitError

ROOT = Path(__file__).resolve().parents[1]
TINY = "tiny_cityscapes"
QUIET = lambda *a: None  # noqa: E731


def export(out: Path, model: str = TINY, **kw):
    from export.exporter import export_fp32, resolve_source

    source = resolve_source(model, kw.pop("checkpoint", None), kw.pop("random_init", True))
    return export_fp32(source, out, log=QUIET, **kw)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny")
    path, meta, reused = export(out)
    return path, meta, reused


def test_tiny_export_passes_checker_and_parity(tiny):
    import onnx

    path, meta, reused = tiny
    assert not reused and path.name == "tiny_cityscapes_64x128.onnx"
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) == 17
    assert [p.name for p in path.parent.iterdir() if p.suffix != ".onnx"] == []   # one file, no temp left
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 3, 64, 128]
    verify = meta.extra["verify"]
    assert verify["against"] == "pytorch" and verify["agreement"] >= 0.9999 and verify["max_abs_diff"] < 1e-3
    assert "synthetic street scenes" in verify["on"]


def test_metadata_round_trip(tiny):
    from runtime.zoo import get_variant
    from runtime.artifact import read_onnx_meta
    from runtime.backends import open_backend

    path, meta, _ = tiny
    back = read_onnx_meta(path)
    variant = get_variant(TINY)
    assert back == meta
    assert back.variant == TINY and back.num_classes == 19 and back.crop == (64, 128)
    assert back.class_names == variant.dataset.class_names and back.palette == variant.dataset.palette
    assert back.mean == variant.dataset.mean and back.std == variant.dataset.std
    assert back.output == "logits" and back.precision == "fp32" and back.random_init is True
    assert back.checkpoint_sha256 == "" and {"torch", "onnx", "onnxruntime"} <= set(back.extra["versions"])
    with open_backend(str(path)) as backend:   # the runtime reads the same metadata from the session
        assert backend.meta == meta and backend.input_shape == (1, 3, 64, 128)


def test_r18_small_crop_parity_and_checkpoint_hash(tmp_path):
    import onnx
    import torch

    from models import create_model
    from models.checkpoints import save_checkpoint
    from runtime.fileio import sha256_file

    torch.manual_seed(1)
    ckpt = save_checkpoint(tmp_path / "r18.pth", create_model("r18os8_cityscapes"))
    path, meta, _ = export(tmp_path / "out", "r18os8_cityscapes", checkpoint=str(ckpt), random_init=False,
                           crop=(64, 128))
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    assert meta.extra["verify"]["agreement"] >= 0.9999
    assert meta.checkpoint_sha256 == sha256_file(ckpt) and meta.random_init is False


def test_labels_output_is_int32_argmax(tmp_path, tiny):
    from runtime.backends import open_backend

    path, meta, _ = export(tmp_path, output="labels", crop=(65, 129))
    assert path.name == "tiny_cityscapes_65x129_labels.onnx" and meta.output == "labels"
    x = np.random.default_rng(0).standard_normal((1, 3, 65, 129)).astype(np.float32)
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = sess.run(None, {"input": x})[0]
    assert out.dtype == np.int32 and out.shape == (1, 65, 129) and out.max() < 19
    with open_backend(str(path)) as backend:
        assert backend.output_kind == "labels"


def test_rerun_reuses_and_says_so(tmp_path):
    lines: list[str] = []
    first = export(tmp_path)
    mtime = first[0].stat().st_mtime_ns
    from export.exporter import export_fp32, resolve_source

    path, meta, reused = export_fp32(resolve_source(TINY, None, True), tmp_path, log=lines.append)
    assert reused and path.stat().st_mtime_ns == mtime and meta == first[1]
    assert any(line.startswith("reusing") for line in lines)
    _, _, reused_b2 = export(tmp_path, batch=2)   # a different input makes a new artifact
    assert not reused_b2 and (tmp_path / "tiny_cityscapes_64x128_b2.onnx").is_file()


def test_failed_verification_leaves_no_file(tmp_path, monkeypatch):
    import export.exporter as to_onnx

    monkeypatch.setattr(to_onnx, "parity", lambda *a, **k: {"agreement": 0.9, "pixels": 10, "max_abs_diff": 5.0})
    with pytest.raises(ToolkitError, match="disagrees"):
        export(tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("argv, message", [
    (["--model", TINY, "--random-init", "--crop", "60x128"], "does not fit tiny_cityscapes"),
    (["--model", TINY, "--random-init", "--crop", "8x16"], "does not fit"),
    (["--model", "tiny_cityscape", "--random-init"], "did you mean tiny_cityscapes"),
    (["--model", TINY, "--random-init", "--checkpoint", "x.pth"], "contradict"),
    (["--model", TINY, "--checkpoint", "missing.pth"], "checkpoint not found"),
    (["--model", TINY], "has no released checkpoint"),
])
def test_bad_input_one_line_error(tmp_path, capsys, argv, message):
    from apps.to_onnx import main

    code = run_cli(main, argv + ["--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: ") and "\n" not in err and message in err
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_checkpoint_of_another_variant(tmp_path, capsys):
    import torch

    from apps.to_onnx import main
    from models import create_model
    from models.checkpoints import save_checkpoint

    torch.manual_seed(0)
    ckpt = save_checkpoint(tmp_path / "tiny.pth", create_model(TINY))
    code = run_cli(main, ["--model", "r18os8_cityscapes", "--checkpoint", str(ckpt), "--crop", "64x128",
                          "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "does not fit this model variant" in err and err.count("\n") == 1
    assert list((tmp_path / "out").iterdir()) == []


def test_unwritable_out_dir(tmp_path, capsys):
    from apps.to_onnx import main

    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    code = run_cli(main, ["--model", TINY, "--random-init", "--out", str(blocker / "sub")])
    assert code == 2 and "cannot create output directory" in capsys.readouterr().err


def test_offline_release_download_names_both_ways_out(monkeypatch, capsys, tmp_path):
    import models.checkpoints as ck
    from apps.to_onnx import main

    def offline(url, *a, **k):
        raise ToolkitError(f"cannot download {url} (Name or service not known)")

    monkeypatch.setattr(ck, "download", offline)
    code = run_cli(main, ["--model", "r50os8_cityscapes", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "--checkpoint PATH" in err and "--random-init" in err


def test_script_runs_as_a_file():
    res = subprocess.run([sys.executable, "export/to_onnx.py", "--model", TINY, "--random-init",
                          "--crop", "63x128"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and res.stderr.startswith("error: crop 63x128") and res.stdout == ""
