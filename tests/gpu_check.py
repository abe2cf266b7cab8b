"""The prepared GPU check (installs nothing): ``python3 -m tests.gpu_check [--iters N]``.

1. pytest -m gpu tests/test_gpu.py (PyTorch CUDA vs CPU reference, cuda-python memory helper and
   CUDA-graph replay);
2. GPU timing of the reference model (r50os8_cityscapes, random init: speed does not depend on the
   weights) at its published crop 512x1024, batch 1, FP32 and FP16 autocast, CUDA-synchronised.
Results go to ``$OUT/gpu_check.json`` (and the pytest log to ``$OUT/gpu_tests.txt``) when OUT is set.
Meant to finish in well under 5 minutes on one GPU.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_tests() -> dict:
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rA", "-m", "gpu", "tests/test_gpu.py"],
                          cwd=str(REPO), capture_output=True, text=True, timeout=240)
    return {"exit": proc.returncode, "log": proc.stdout[-6000:] + proc.stderr[-2000:]}


def time_reference(iters: int) -> dict:
    import torch

    from models.factory import create_model

    if not torch.cuda.is_available():
        return {"skipped": "no CUDA GPU visible to PyTorch"}
    model = create_model("r50os8_cityscapes").eval().cuda()
    x = torch.randn(1, 3, 512, 1024, device="cuda")
    out = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "crop": [512, 1024]}
    for mode, dtype in (("fp32", None), ("fp16-autocast", torch.float16)):
        with torch.inference_mode(), torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
            for _ in range(3):
                model(x)
            torch.cuda.synchronize()
            times = []
            for _ in range(iters):
                t0 = time.perf_counter()
                model(x)
                torch.cuda.synchronize()
                times.append(time.perf_counter() - t0)
        times.sort()
        out[mode] = {"median_ms": round(1000 * times[len(times) // 2], 2), "min_ms": round(1000 * times[0], 2),
                     "iters": iters}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m tests.gpu_check", description=__doc__.splitlines()[0])
    ap.add_argument("--iters", type=int, default=20)
    args = ap.parse_args(argv)
    tests = run_tests()
    print(tests["log"])
    result = {"tests_exit": tests["exit"], "timing": time_reference(args.iters)}
    print(json.dumps(result, indent=1))
    if os.environ.get("OUT"):
        out = Path(os.environ["OUT"])
        out.mkdir(parents=True, exist_ok=True)
        (out / "gpu_tests.txt").write_text(tests["log"])
        (out / "gpu_check.json").write_text(json.dumps(result, indent=1))
    return tests["exit"]


if __name__ == "__main__":
    sys.exit(main())
