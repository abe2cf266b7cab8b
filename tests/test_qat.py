"""Quantization-aware fine-tuning: the fake-quantised graph (models/qat.py) and the ``--max-drop``
escalation to it (export/budget/qat.py) on the tiny variant."""
from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import VARIANT, tiny_int8_files

ITERS = "8"
UNMET = ("--max-drop", "0", "--qat-data", "{data}", "--qat-iters", ITERS, "--qat-lr", "1e-6")


def _ort(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL   # the file's arithmetic, unfused
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


@pytest.fixture(scope="module")
def qdq(tmp_path_factory):
    return tiny_int8_files(tmp_path_factory.mktemp("qat_files"))


def test_quant_graph_computes_what_the_qdq_file_computes(qdq):
    import torch

    from models.qat import QuantGraph

    x = np.random.default_rng(0).standard_normal((1, 3, *qdq["fp32"].meta.crop)).astype(np.float32)
    for key, sites in (("trt", True), ("fp32", False)):
        path = qdq[key].path
        graph = QuantGraph.from_file(path).eval()
        assert (graph.fake_quant_sites > 0) == sites
        with torch.no_grad():
            out = graph(torch.from_numpy(x)).numpy()
        ref = _ort(path, x)
        assert np.abs(out - ref).max() <= 1e-5 * max(1.0, np.abs(ref).max())


def test_trained_weights_requantize_to_the_same_layout(qdq, tmp_path):
    """A few SGD steps, then the weights go back into the FP32 graph and through the quantizer: the
    file computes what the fake-quantised graph computes, keeps its Q/DQ layout and passes the fusion check."""
    import onnx
    import torch

    from calibration.fusion import check_fusion
    from calibration.qdq import excluded_nodes, quantize
    from models.qat import QuantGraph, write_weights

    trt = qdq["trt"].path
    graph = QuantGraph.from_file(trt).train()
    opt = torch.optim.SGD(graph.parameters(), lr=0.05)
    x = torch.from_numpy(np.random.default_rng(1).standard_normal((2, 3, *qdq["fp32"].meta.crop)).astype(np.float32))
    target = torch.randint(0, 19, (2, *qdq["fp32"].meta.crop))
    losses = []
    for _ in range(3):
        loss = torch.nn.functional.cross_entropy(graph(x)["out"], target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0]                                    # gradients pass the fake quantization
    pre = sorted((trt.parent / "calibration").glob("pre*.onnx"))[0]
    ranges = sorted((trt.parent / "calibration").glob("ranges*_max.json"))[0]
    tuned = tmp_path / "tuned_pre.onnx"
    write_weights(pre, graph.weights(), tuned)
    out = tmp_path / "tuned_trt.onnx"
    kept = quantize(tuned, ranges, out, "trt", "max")              # the fixture's keep: attention, head
    ops = lambda p: sorted(n.op_type for n in onnx.load(str(p)).graph.node)       # noqa: E731
    assert ops(out) == ops(trt)                                       # same Q/DQ layout
    xe = x[:1].numpy()
    with torch.no_grad():
        mine = graph.eval()(torch.from_numpy(xe)).numpy()
    assert np.abs(_ort(out, xe) - mine).max() <= 1e-4 * max(1.0, np.abs(mine).max())
    assert np.abs(_ort(out, xe) - _ort(trt, xe)).max() > 1e-3          # and the weights did change
    assert check_fusion(onnx.load(str(out)), "weak", excluded_nodes(tuned, kept)).ok


# -- the escalation through export/to_trt.py --------------------------------------------------------
@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Generated scenes with their labels (train: calibration and fine-tuning; val: evaluation) and
    the tiny model trained on them briefly: a model whose function the labels explain, as a released
    one's is (a random model's labels are noise that fine-tuning cannot keep)."""
    from models.trainer import TrainConfig, train
    from samples.dataset import generate_dataset

    d = tmp_path_factory.mktemp("qat")
    generate_dataset(d / "data", size=(96, 192), n_train=16, n_val=4, seed=3, workers=1, progress=False)
    config = TrainConfig(model=VARIANT, data=str(d / "data"), out=str(d / "run"), crop="64x128", base_size="192x96",
                         ratio_range="0.75,1.25", iters=60, batch_size=4, lr=0.05, amp="off", val_every=0,
                         save_every=0, workers=0, log_every=1000)
    assert train(config) == 0
    return {"dir": d, "ckpt": str(d / "run" / "latest.pth"), "data": str(d / "data")}


def to_trt(setup, out: Path, *extra: str, lines: list | None = None) -> int:
    import contextlib
    import io

    from apps.cli import run_cli
    from apps.to_trt import main

    argv = ["--model", VARIANT, "--checkpoint", setup["ckpt"], "--calib-data", setup["data"], "--calib-images", "16",
            "--out", str(out), "--backend", "onnxruntime", "--quiet", "--int8", "--calib-method", "entropy",
            "--keep-int8", "none", "--max-float-layers", "0", "--no-float-for-speed", *extra]
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = run_cli(main, argv)
    if lines is not None:
        lines.extend(buf.getvalue().splitlines())
    return code


def _budget_files(out: Path) -> list[str]:
    return sorted(p.name for p in out.glob("*maxdrop*"))


@pytest.fixture(scope="module")
def unmet(setup, tmp_path_factory):
    """Budget 0 with a learning rate too small to move anything: PTQ fails, QAT runs and fails too."""
    out = tmp_path_factory.mktemp("qat_unmet")
    lines: list[str] = []
    code = to_trt(setup, out, *(a.format(data=setup["data"]) for a in UNMET), lines=lines)
    return {"out": out, "code": code, "lines": lines}


def test_a_budget_even_qat_cannot_meet_exits_2_and_writes_nothing(unmet):
    assert unmet["code"] == 2
    assert _budget_files(unmet["out"]) == [] and not list(unmet["out"].glob("budget*"))
    assert any("QAT: fine-tuning entropy" in line for line in unmet["lines"])
    assert any(line.startswith("2  QAT") and "over budget" in line for line in unmet["lines"])


def test_qat_meets_a_budget_ptq_misses_and_passes_the_gate(setup, tmp_path):
    """Entropy ranges with nothing float miss 0.1 points after calibration alone (+0.36 measured);
    8 fine-tuning iterations meet it. Both layouts written, the TensorRT one fusion-checked, and
    runtime.evaluate agrees afterwards on the held-out frames."""
    from runtime.artifact import read_onnx_meta

    budget = "0.1"
    out = tmp_path / "out"
    lines: list[str] = []
    assert to_trt(setup, out, "--max-drop", budget, "--qat-data", setup["data"], "--qat-iters", ITERS, lines=lines) == 0
    assert any("QAT: fine-tuning entropy" in line for line in lines)
    files = _budget_files(out)
    assert any(f.endswith(".png") for f in files) and any(f.endswith(".md") for f in files)
    report = json.loads(next(out.glob("budget_*.json")).read_text())
    kinds = {c["kind"]: c for c in report["candidates"]}
    assert kinds["PTQ"]["passed"] is False and kinds["QAT"]["passed"] is True
    assert report["winner"]["kind"] == "QAT" and report["qat"]["iters"] == int(ITERS)
    assert "QAT entropy, 0 float" in report["front"]
    md = next(out.glob("budget_*.md")).read_text()
    assert "## Quantization-aware fine-tuning" in md and "_front.png)" in md
    trt = next(out.glob("*_int8_trt_maxdrop*.onnx"))
    meta = read_onnx_meta(trt)
    assert meta.extra["fusion"] and meta.extra["budget"]["kind"] == "QAT"
    from apps.evaluate import main as evaluate

    code = evaluate(["--data", setup["data"], "--reference", VARIANT, "--checkpoint", setup["ckpt"], "--artifacts",
                     str(trt), *[str(p) for p in out.glob("*_int8_ort_maxdrop*.onnx")], "--max-drop",
                     f"int8={budget}", "--out", str(tmp_path / "gate")])
    assert code == 0
    gate = json.loads((tmp_path / "gate" / "evaluate.json").read_text())
    rows = [r for r in gate["rows"] if r["precision"] == "int8"]
    assert rows and all(r["drop"] <= float(budget) + 1e-9 for r in rows)


def test_fine_tuning_frames_must_not_be_evaluation_frames(setup, tmp_path):
    import shutil

    twin = tmp_path / "twin"
    for kind in ("leftImg8bit", "gtFine"):            # its train split = the evaluation (val) frames
        shutil.copytree(Path(setup["data"]) / kind / "val", twin / kind / "train")
    lines: list[str] = []
    assert to_trt(setup, tmp_path / "out", "--max-drop", "0", "--qat-data", str(twin), lines=lines) == 2
    assert not any(line.startswith("QAT: fine-tuning") for line in lines)
    assert _budget_files(tmp_path / "out") == []


def test_interrupted_qat_resumes_to_the_uninterrupted_result(setup, unmet, tmp_path, monkeypatch, capsys):
    """Ctrl-C during fine-tuning: exit 130, nothing written, the run kept; the same command resumes
    it and ends with exactly the weights of the uninterrupted run (the budget-0 run's)."""
    import torch

    import models.trainer

    real = models.trainer.train_step
    calls = {"n": 0}

    def interrupting(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            os.kill(os.getpid(), signal.SIGINT)        # what Ctrl-C does; the trainer finishes this step
        return real(*args, **kwargs)

    monkeypatch.setattr(models.trainer, "train_step", interrupting)
    out = tmp_path / "out"
    argv = tuple(a.format(data=setup["data"]) for a in UNMET)
    assert to_trt(setup, out, *argv) == 130
    assert "run the same command again to resume" in capsys.readouterr().err
    assert _budget_files(out) == []
    run = next((out / "calibration").glob("qat_*"))
    first = torch.load(run / "latest.pth", weights_only=True)
    assert first["cur_iter"] == 3 and not first["finished"]
    monkeypatch.setattr(models.trainer, "train_step", real)
    lines: list[str] = []
    assert to_trt(setup, out, *argv, lines=lines) == 2                  # budget 0: still unmet, as before
    assert any("resuming at iteration 3" in line for line in lines)
    done = torch.load(run / "latest.pth", weights_only=True)
    ref = torch.load(next((unmet["out"] / "calibration").glob("qat_*")) / "latest.pth", weights_only=True)
    assert done["finished"] and done["cur_iter"] == int(ITERS)
    for k, v in ref["model"].items():
        assert torch.equal(done["model"][k], v), k


def test_qat_flags_are_checked(setup, tmp_path):
    from runtime.errors import ToolkitError

    cases = [(["--qat-data", setup["data"]], "only apply to --max-drop"),
             (["--max-drop", "1", "--qat-iters", "5"], "only apply to --qat-data"),
             (["--max-drop", "1", "--qat-data", setup["data"], "--no-qat"], "conflicts"),
             (["--max-drop", "1", "--qat-data", str(tmp_path / "missing")], "not found"),
             (["--max-drop", "1", "--qat-data", setup["data"], "--qat-lr", "2"], "--qat-lr")]
    from apps.to_trt import main

    for extra, message in cases:
        argv = ["--model", VARIANT, "--checkpoint", setup["ckpt"], "--calib-data", setup["data"], "--int8",
                "--out", str(tmp_path / "o"), "--backend", "onnxruntime", *extra]
        with pytest.raises(ToolkitError, match=message):
            main(argv)
    assert not (tmp_path / "o").exists()
