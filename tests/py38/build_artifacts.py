"""Build what the Python 3.8 (JetPack 5) job runs on, with the main Python (torch, onnx):

    python3 tests/py38/build_artifacts.py DIR

DIR/images (4 synthetic street scenes), DIR/artifacts (tiny_cityscapes, random init: FP32, FP16,
INT8 TensorRT layout, INT8 ORT-CPU layout, INT8+FP16) through export/to_trt.py --backend onnxruntime.
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def main(out: Path) -> int:
    import cv2
    import numpy as np

    from apps.to_trt import main as to_trt
    from samples.dataset import render_scene

    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    for i in range(4):
        rgb, _ = render_scene(np.random.default_rng([7, i]), 96, 200)
        cv2.imwrite(str(images / f"scene_{i}.png"), rgb[:, :, ::-1])
    return to_trt(["--model", "tiny_cityscapes", "--random-init", "--fp16", "--int8", "--calib-data", str(images),
                   "--calib-method", "max", "--calib-images", "4", "--backend", "onnxruntime",
                   "--out", str(out / "artifacts"), "--quiet"])


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
