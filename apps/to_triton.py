"""Artifacts -> a Triton Inference Server model repository.

    python export/to_triton.py --artifacts artifacts/r18os8_cityscapes_512x1024.onnx \\
        [artifacts/r18os8_cityscapes_512x1024_int8.engine ...] --out triton_repo \\
        [--platform onnxruntime|python] [--instances 2] [--kind cpu|gpu] [--max-batch 8] \\
        [--preferred-batch 4 8] [--max-queue-delay-us 1000] [--stride HxW] [--force]

Per artifact a tile model (config.pbtxt with platform ``onnxruntime_onnx`` for NVIDIA's Triton
containers, or ``--platform python`` = ONNX Runtime in Triton's Python backend, which the pip-bundled
server here runs; engines get ``tensorrt_plan``), and a frame model ``<name>_frame`` that takes a
whole RGB uint8 frame and returns the uint8 label map, tiling it with the toolkit's tiler around the
tile model (BLS). ONNX tile models get a verified dynamic-batch copy so the dynamic batcher can merge
tiles (``--max-batch 0`` keeps the static batch); engines keep their static batch (max_batch_size 0).
Where the Triton environment is set up (``python -m runtime.serve --setup``) every config.pbtxt is
also parsed with Triton's model_config.proto.

The repository is built in a temporary folder beside ``--out`` and renamed into place only when every
model is written and checked: an error or a kill leaves no half-repository. An ``--out`` that is not
empty is refused; ``--force`` replaces it as a whole (old models never stay beside new ones).
"""
from __future__ import annotations

import argparse
from typing import Sequence

from apps.serve import add_repo_arguments, repo_options  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python export/to_triton.py", description=__doc__.split("\n")[0])
    p.add_argument("--artifacts", nargs="+", required=True, help=".onnx / .engine artifacts")
    p.add_argument("--out", default="triton_repo", help="model repository directory")
    p.add_argument("--platform", default="onnxruntime", choices=("onnxruntime", "python"),
                   help="ONNX tile models: Triton's onnxruntime backend, or ONNX Runtime in the Python backend")
    p.add_argument("--kind", default="cpu", choices=("cpu", "gpu"), help="instance kind of the tile models")
    p.add_argument("--force", action="store_true", help="replace a non-empty --out (as a whole, atomically)")
    add_repo_arguments(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from runtime.triton.env import find_env, parse_configs
    from runtime.triton.repo import write_repository

    schema = find_env() is not None
    entries = write_repository(args.artifacts, args.out, repo_options(args, args.platform, args.kind),
                               replace=args.force, check=parse_configs if schema else None,
                               exists_fix="pass --force to replace it, or choose another --out")
    if schema:
        print(f"{len(entries)} config.pbtxt parsed with Triton's model_config.proto")
    else:
        print("note: Triton environment not set up; configs not schema-checked (python -m runtime.serve --setup)")
    print(f"repository: {args.out}  (serve: python -m runtime.serve {args.out} --http-port 8000)")
    return 0
