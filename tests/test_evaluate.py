"""runtime.evaluate as a CI gate: faithful artifact passes, damaged / NaN artifacts fail."""
from __future__ import annotations

import json

import numpy as np
import pytest

from runtime.errors import ToolkitError
from apps.evaluate import DEFAULT_MAX_DROP, main, parse_max_drop
from runtime.data import train_to_label_ids
from tests.conftest import seeded_tiny, VARIANT, export_onnx, synthetic_frame, write_self_labelled


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Seeded tiny model + checkpoint + faithful ONNX, and a 3-image Cityscapes-layout val split
    whose ground truth is the reference's own tiled prediction (reference mIoU = 100%)."""
    from runtime.backends import open_backend

    d = tmp_path_factory.mktemp("evaluate")
    model, ckpt = seeded_tiny(d, 1)
    onnx_path = export_onnx(ckpt, d)
    with open_backend(VARIANT, model=model) as ref:
        write_self_labelled(d / "data", "val", [synthetic_frame(96, 200, seed=i) for i in range(3)], ref)
    return {"dir": d, "ckpt": str(ckpt), "onnx": onnx_path, "data": str(d / "data")}


def damaged_copy(src, dst, how: str):
    """A copy of ``src`` with the first Conv weight perturbed ('noise') or set to Inf ('inf')."""
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(src))
    conv_w = next(n.input[1] for n in proto.graph.node if n.op_type == "Conv")
    init = next(i for i in proto.graph.initializer if i.name == conv_w)
    w = numpy_helper.to_array(init).copy()
    if how == "noise":
        w += np.random.default_rng(0).normal(0, 2 * w.std(), w.shape).astype(w.dtype)
    else:
        w[0] = np.inf
    init.CopyFrom(numpy_helper.from_array(w, conv_w))
    onnx.save(proto, str(dst))
    return dst


def run(setup, artifacts, out, *extra):
    argv = ["--data", setup["data"], "--reference", VARIANT, "--checkpoint", setup["ckpt"],
            "--artifacts", *map(str, artifacts), "--out", str(out), *extra]
    code = main(argv)
    return code, json.loads((out / "evaluate.json").read_text())


def test_faithful_artifact_passes(setup, capsys):
    out = setup["dir"] / "ok"
    code, report = run(setup, [setup["onnx"]], out, "--save-preds")
    ref, cand = report["rows"]
    assert code == 0 and report["passed"]
    assert ref["miou"] == pytest.approx(1.0)      # ground truth = the reference's own prediction
    assert cand["agreement"] >= 0.9999 and abs(cand["drop"]) <= DEFAULT_MAX_DROP["fp32"]
    assert cand["passed"] is True and cand["precision"] == "fp32"
    assert set(cand["per_class_iou"]) == set(report["class_names"])
    label = "onnxruntime:" + setup["onnx"].stem
    assert cand["label"] == label
    md = (out / "evaluate.md").read_text().splitlines()
    assert sum(line.startswith(f"| {label} | fp32 |") for line in md) == 1
    assert label in capsys.readouterr().out
    preds = out / "preds" / label.replace(":", "_")
    assert len(list(preds.glob("*_color.png"))) == 3 and len(list((preds / "disagreement").glob("*.png"))) == 3
    import cv2
    ids = cv2.imread(str(preds / "labelIds" / "testcity_000000_000000_labelIds.png"), cv2.IMREAD_UNCHANGED)
    assert ids.shape == (96, 200) and set(np.unique(ids)) <= set(train_to_label_ids(np.arange(19)))


def test_damaged_artifact_fails_the_gate(setup, capsys):
    bad = damaged_copy(setup["onnx"], setup["dir"] / "tiny_damaged.onnx", "noise")
    code, report = run(setup, [setup["onnx"], bad], setup["dir"] / "bad")
    good_row, bad_row = report["rows"][1:]
    assert code == 1 and not report["passed"]
    assert good_row["passed"] is True
    assert bad_row["passed"] is False and bad_row["drop"] > 1.0 and bad_row["agreement"] < 0.99
    assert "FAIL" in capsys.readouterr().out
    # a generous limit lets the same artifact through: the gate follows --max-drop
    code, _ = run(setup, [bad], setup["dir"] / "bad2", "--max-drop", "fp32=100")
    assert code == 0
    code, report = run(setup, [bad], setup["dir"] / "bad3", "--max-drop", "100")   # a bare number: every precision
    assert code == 0 and report["max_drop"] == {k: 100.0 for k in DEFAULT_MAX_DROP}


def test_nan_artifact_is_reported_not_scored(setup, capsys):
    nan = damaged_copy(setup["onnx"], setup["dir"] / "tiny_inf.onnx", "inf")
    code, report = run(setup, [nan], setup["dir"] / "nan")
    row = report["rows"][1]
    assert code == 1 and row["passed"] is False and "non-finite" in row["error"]
    assert "NaN/Inf" in capsys.readouterr().out


def test_max_drop_parsing():
    assert parse_max_drop(None) == DEFAULT_MAX_DROP
    limits = parse_max_drop("int8=0.3,fp16=0.2")
    assert limits["int8"] == 0.3 and limits["fp16"] == 0.2 and limits["bf16"] == 0.2 and limits["fp32"] == 0.01
    assert parse_max_drop("0.5") == {k: 0.5 for k in DEFAULT_MAX_DROP}        # as export/to_trt.py --max-drop 0.5
    assert parse_max_drop(" 0 ") == {k: 0.0 for k in DEFAULT_MAX_DROP}
    for bad in ("int4=1", "fp16", "fp16=-1", "fp16=x", "-0.5", "inf", "nan", "fp16=inf", "int8=nan", "0.5,int8=1"):
        with pytest.raises(ToolkitError, match="--max-drop"):
            parse_max_drop(bad)


def test_usage_errors_are_toolkit_errors(setup, tmp_path):
    with pytest.raises(ToolkitError, match="cannot tell the backend"):
        main(["--data", setup["data"], "--reference", VARIANT, "--artifacts", "model.pt", "--out", str(tmp_path)])
    with pytest.raises(ToolkitError, match="did you mean"):
        main(["--data", setup["data"], "--reference", "tiny_citiscapes", "--out", str(tmp_path)])


def test_train_id_ground_truth_is_refused_unless_declared(setup, tmp_path, capsys):
    import shutil

    import cv2

    from apps.cli import run_cli
    from runtime.data import cityscapes_lut

    data = tmp_path / "data"
    shutil.copytree(setup["data"], data)
    for gt in data.rglob("*_gtFine_labelIds.png"):      # labelIds -> trainIds in place, as a user might
        lab = cv2.imread(str(gt), cv2.IMREAD_UNCHANGED)
        lab[:2] = 1                                         # ego vehicle -> 255 (ignore) after the mapping
        cv2.imwrite(str(gt), cityscapes_lut()[lab])
    argv = ["--data", str(data), "--reference", VARIANT, "--checkpoint", setup["ckpt"], "--out", str(tmp_path / "r")]
    assert run_cli(main, argv) == 2
    assert "looks like trainIds" in capsys.readouterr().err
    assert run_cli(main, argv + ["--label-ids", "trainIds"]) == 0
    report = json.loads((tmp_path / "r" / "evaluate.json").read_text())
    assert report["rows"][0]["miou"] == pytest.approx(1.0)


def test_reference_follows_the_artifact_crop_and_refuses_a_mix(setup, tmp_path, capsys):
    from export.exporter import export_fp32, resolve_source
    from apps.cli import run_cli

    square, _, _ = export_fp32(resolve_source(VARIANT, setup["ckpt"], False), tmp_path, crop=(64, 64),
                               log=lambda *a: None)
    code, report = run(setup, [square], tmp_path / "r")
    assert code == 0 and report["crop"] == [64, 64]
    assert report["rows"][1]["agreement"] >= 0.9999 and report["rows"][1]["passed"] is True
    base = ["--data", setup["data"], "--reference", VARIANT, "--checkpoint", setup["ckpt"], "--out", str(tmp_path)]
    assert run_cli(main, base + ["--crop", "64x128", "--artifacts", str(square)]) == 2
    err = capsys.readouterr().err
    assert "--crop 64x128 differs from the artifacts' crop 64x64" in err and "not the precision" in err
    assert run_cli(main, base + ["--artifacts", str(square), str(setup["onnx"])]) == 2
    assert "built at different crops (64x64: " in capsys.readouterr().err


def test_int8_fp16_artifact_scores_like_the_int8_file_it_comes_from(setup, tmp_path):
    """The gate scores the mixed INT8+FP16 file in ONNX Runtime; FP16 in the other layers adds next
    to nothing to the INT8 error (the seeded tiny model is untrained: its INT8 drop itself is large,
    so the gate verdict on the trained sample model is the quickstart's, see README)."""
    from pathlib import Path

    from export.pipeline import Artifact, CalibRequest, Verifier, calibration_set, make_int8
    from export.verify import verification_tiles
    from runtime.artifact import read_onnx_meta

    images = Path(setup["data"]) / "leftImg8bit" / "val" / "testcity"
    meta = read_onnx_meta(setup["onnx"])
    fp32 = Artifact("fp32", Path(setup["onnx"]), meta, True)
    req = CalibRequest(str(images), "max", None, max_images=3)
    verifier = Verifier(fp32.path, verification_tiles(str(images), meta.crop, meta.mean, meta.std), False, lambda *a: None)
    trt, _, mixed = make_int8(fp32, calibration_set(fp32, req, progress=False), req, verifier, log=lambda *a: None,
                              progress=False)
    _, report = run(setup, [trt.path, mixed.path], tmp_path / "gate")
    int8_row, mixed_row = report["rows"][1:]
    assert mixed_row["precision"] == "int8" and mixed_row["label"] == "onnxruntime:" + mixed.path.stem
    print(f"gate: int8_trt drop {int8_row['drop']:.3f} agreement {int8_row['agreement']:.4f}; "
          f"int8_fp16 drop {mixed_row['drop']:.3f} agreement {mixed_row['agreement']:.4f}")
    assert abs(mixed_row["agreement"] - int8_row["agreement"]) < 0.005
    assert abs(mixed_row["drop"] - int8_row["drop"]) < 1.0


def test_openvino_bf16_row_next_to_the_onnx_runtime_rows(setup, tmp_path, capsys):
    """--also-openvino FILE --ov-precision bf16: one more row, the FP32 file with bf16 float layers in
    OpenVINO, scored against the same reference and held to the bf16 limit (the FP16 one by default)."""
    pytest.importorskip("openvino", reason="OpenVINO is not installed (pip install -e .[openvino])")
    from apps.cli import run_cli

    onnx = str(setup["onnx"])
    code, report = run(setup, [onnx], tmp_path / "bf16", "--also-openvino", onnx, "--ov-precision", "bf16",
                       "--threads", "1")
    ort_row, ov_row = report["rows"][1:]
    assert ort_row["backend"] == "onnxruntime" and ort_row["precision"] == "fp32"
    assert ov_row["backend"] == "openvino" and ov_row["label"] == "openvino-bf16:" + setup["onnx"].stem
    from runtime.sysinfo import native_bf16

    if native_bf16():       # elsewhere OpenVINO may run the hint emulated or in f32: the row says which
        assert ov_row["precision"] == "bf16" and ov_row["executed_precision"] == "bf16"
    assert ov_row["precision"] == {"bf16": "bf16", "f32": "fp32"}[ov_row["executed_precision"]]
    assert ov_row["max_drop"] == DEFAULT_MAX_DROP[ov_row["precision"]]
    assert DEFAULT_MAX_DROP["bf16"] == DEFAULT_MAX_DROP["fp16"]
    assert ov_row["agreement"] > 0.9 and ov_row["passed"] is not None
    _, report = run(setup, [onnx], tmp_path / "all", "--also-openvino", "--max-drop", "100")   # no FILE: every .onnx
    assert [r["label"] for r in report["rows"][1:]] == ["onnxruntime:" + setup["onnx"].stem,
                                                         "openvino:" + setup["onnx"].stem]
    base = ["--data", setup["data"], "--reference", VARIANT, "--checkpoint", setup["ckpt"], "--out", str(tmp_path)]
    for extra, message in ((["--artifacts", onnx, "--ov-precision", "bf16"], "--ov-precision only applies"),
                           (["--artifacts", onnx, "--backend", "openvino", "--also-openvino"],
                            "but --backend is openvino"),
                           (["--also-openvino", "model.engine"], "--also-openvino runs .onnx files only"),
                           (["--also-openvino"], "found no .onnx file")):
        assert run_cli(main, base + extra) == 2
        assert message in capsys.readouterr().err
