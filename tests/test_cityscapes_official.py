"""The official cityscapesScripts evaluator, run unmodified on `runtime.evaluate --save-preds` output.

The documented command (README):

    CITYSCAPES_DATASET=DATA CITYSCAPES_RESULTS=OUT/preds/BACKEND/labelIds csEvalPixelLevelSemanticLabeling

It needs `*_gtFine_instanceIds.png` beside the labels (samples.generate writes them). cityscapesScripts
2.3.0 calls ``np.in1d``, which NumPy 2.4 removed, so `bash .ci/run` installs it in its own virtual
environment, ``.venv-cityscapes`` (numpy<2.4); ``CITYSCAPES_EVAL_BIN`` may name another install.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EVAL_BIN = Path(os.environ.get("CITYSCAPES_EVAL_BIN")
                or ROOT / ".venv-cityscapes" / "bin" / "csEvalPixelLevelSemanticLabeling")

pytestmark = pytest.mark.skipif(not EVAL_BIN.is_file(), reason=(
    f"official evaluator not installed at {EVAL_BIN}: `bash .ci/run` creates .venv-cityscapes "
    "(pip install cityscapesscripts 'numpy<2.4'), or set CITYSCAPES_EVAL_BIN"))


def test_official_evaluator_runs_unmodified_and_agrees_with_ours(tmp_path):
    import torch

    from export.exporter import export_fp32, resolve_source
    from models import create_model
    from models.checkpoints import save_checkpoint
    from apps.evaluate import main as evaluate_main
    from samples.dataset import generate_dataset

    data = tmp_path / "synth"
    generate_dataset(data, (128, 256), n_train=0, n_val=3, seed=5, workers=1, progress=False)
    torch.manual_seed(1)
    ckpt = save_checkpoint(tmp_path / "tiny.pth", create_model("tiny_cityscapes"))
    onnx_path, _, _ = export_fp32(resolve_source("tiny_cityscapes", str(ckpt), False), tmp_path, log=lambda *a: None)
    out = tmp_path / "eval"
    assert evaluate_main(["--data", str(data), "--reference", "tiny_cityscapes", "--checkpoint", str(ckpt),
                          "--artifacts", str(onnx_path), "--out", str(out), "--save-preds"]) == 0
    ours = json.loads((out / "evaluate.json").read_text())["rows"][1]
    export = tmp_path / "official"
    export.mkdir()
    results = out / "preds" / f"onnxruntime_{onnx_path.stem}" / "labelIds"     # the documented layout
    env = dict(os.environ, CITYSCAPES_DATASET=str(data), CITYSCAPES_RESULTS=str(results),
               CITYSCAPES_EXPORT_DIR=str(export))
    proc = subprocess.run([str(EVAL_BIN)], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "Evaluating 3 pairs of images" in proc.stdout, proc.stdout + proc.stderr
    official = json.loads((export / "resultPixelLevelSemanticLabeling.json").read_text())
    assert official["averageScoreClasses"] == pytest.approx(ours["miou"], abs=1e-9)
    for name, iou in ours["per_class_iou"].items():
        theirs = official["classScores"][name]
        assert (iou is None and math.isnan(theirs)) or theirs == pytest.approx(iou, abs=1e-9), name
