"""Serve artifacts or a model repository with Triton Inference Server on 127.0.0.1.

    python -m runtime.serve --setup                  # once: venv + pip-bundled tritonserver (cached)
    python -m runtime.serve artifacts/m.onnx --http-port 8000 [--instances 2] [--max-batch 8]
    python -m runtime.serve REPO --http-port 8000    # a repository from export/to_triton.py

Artifacts are first written into a repository (``--repo``, default runs/triton_repo) with the
``python`` platform: the pip-bundled server has only Triton's Python backend, so ONNX Runtime runs
inside it. Waits until every model is ready, prints the models and the URL, and on Ctrl-C or
SIGTERM stops the server and its backend processes (nothing is left running).
"""
from __future__ import annotations

import argparse
import signal
import time
from pathlib import Path
from typing import Any, Sequence

from apps.cli import parse_hw, positive_int
from runtime.errors import ToolkitError

NEEDS_BACKEND = {"onnxruntime_onnx": "onnxruntime", "tensorrt_plan": "tensorrt"}


def add_repo_arguments(p: argparse.ArgumentParser) -> None:
    """Serving options shared with export/to_triton.py."""
    p.add_argument("--instances", type=positive_int, default=1, help="tile model instances (default 1)")
    p.add_argument("--frame-instances", type=positive_int,
                   help="frame model instances (default: --instances); more frames in flight than tile "
                        "instances is what lets the dynamic batcher merge tiles of different frames")
    p.add_argument("--max-batch", type=int, default=8,
                   help="tile models' max_batch_size (dynamic batching); 0 = the artifact's static batch")
    p.add_argument("--preferred-batch", type=positive_int, nargs="*", default=[], help="preferred batch sizes")
    p.add_argument("--max-queue-delay-us", type=int, default=1000, help="dynamic batcher queue delay (µs)")
    p.add_argument("--stride", help="frame model: tiling stride HxW (default: overlap >= 1/3 of the crop)")
    p.add_argument("--no-frame-model", action="store_true", help="tile models only")
    p.add_argument("--ort-threads", type=int, default=0, help="python platform: ONNX Runtime threads per instance")


def repo_options(args: argparse.Namespace, platform: str, kind: str) -> Any:
    from runtime.triton.repo import RepoOptions

    return RepoOptions(platform=platform, instances=args.instances, kind=kind, max_batch=args.max_batch,
                       preferred=tuple(args.preferred_batch), delay_us=args.max_queue_delay_us,
                       frame_model=not args.no_frame_model, ort_threads=args.ort_threads,
                       frame_instances=args.frame_instances,
                       stride=parse_hw(args.stride, "--stride") if args.stride else None)


def repo_models(repo: Path) -> list[tuple[str, str]]:
    """(model, platform-or-backend) of every model directory in ``repo``."""
    import re

    found = []
    for cfg in sorted(repo.glob("*/config.pbtxt")):
        text = cfg.read_text()
        m = re.search(r'^\s*(?:platform|backend)\s*:\s*"([^"]+)"', text, re.M)
        found.append((cfg.parent.name, m.group(1) if m else "?"))
    if not found:
        raise ToolkitError(f"{repo} holds no model (no */config.pbtxt)",
                           fix="write one with `python export/to_triton.py --artifacts ... --out REPO`")
    return found


def check_backends(models: list[tuple[str, str]], backends_dir: Path) -> None:
    have = sorted(p.name for p in backends_dir.iterdir() if p.is_dir())
    for name, kind in models:
        need = NEEDS_BACKEND.get(kind, kind)
        if need not in have:
            raise ToolkitError(f"model {name} needs Triton's {need} backend; this tritonserver has: {', '.join(have)}",
                               fix="serve it with NVIDIA's tritonserver container (NGC), or write the repository "
                                   "with `export/to_triton.py --platform python` (ONNX Runtime in the Python backend)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m runtime.serve", description=__doc__.split("\n")[0])
    p.add_argument("source", nargs="*", help="a model repository directory, or .onnx artifacts")
    p.add_argument("--http-port", type=int, default=8000, help="HTTP port on 127.0.0.1 (default 8000)")
    p.add_argument("--setup", action="store_true", help="set up the Triton venv and server, then exit "
                   "(when no source is given)")
    p.add_argument("--repo", default="runs/triton_repo", help="where artifacts are written as a repository")
    p.add_argument("--log", help="server log file (default REPO/tritonserver.log)")
    add_repo_arguments(p)
    return p


def prepare_repo(args: argparse.Namespace) -> Path:
    sources = [Path(s) for s in args.source]
    if len(sources) == 1 and sources[0].is_dir():
        return sources[0]
    if any(s.is_dir() for s in sources):
        raise ToolkitError("pass one repository directory, or artifact files, not both")
    from runtime.triton.repo import write_repository

    repo = Path(args.repo)     # a repository written here before is replaced as a whole; other files are kept
    write_repository(sources, repo, repo_options(args, "python", "cpu"), replace=(repo / "repository.json").is_file(),
                     exists_fix="choose another --repo (only a repository written by the toolkit is replaced)")
    return repo


def _interrupt(*_: Any) -> None:
    raise KeyboardInterrupt


def serve(server: Any, models: list[tuple[str, str]]) -> int:
    """Start ``server``, block until Ctrl-C / SIGTERM (0) or until the server dies (ToolkitError);
    the server and its backend processes are stopped in every case."""
    previous = signal.signal(signal.SIGTERM, _interrupt)     # SIGTERM behaves like Ctrl-C, even while loading
    try:
        server.start()
        print(f"serving {', '.join(m for m, _ in models)} at {server.url} (Ctrl-C to stop)", flush=True)
        while server.proc.poll() is None:
            time.sleep(0.5)
        raise ToolkitError("tritonserver exited unexpectedly", found=server.log_tail(), fix=f"see {server.log_path}")
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)           # a second signal must not cut the stop short
        previous_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            server.stop()
        finally:
            signal.signal(signal.SIGINT, previous_int)
            signal.signal(signal.SIGTERM, previous)
    print("stopped", flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from runtime.triton.env import require_env, setup_env
    from runtime.triton.server import TritonServer

    if args.setup:
        env = setup_env()
        if not args.source:
            print(f"tritonserver: {env.binary}")
            return 0
    if not args.source:
        raise ToolkitError("nothing to serve", fix="pass a repository directory or .onnx artifacts")
    if not 0 < args.http_port < 65536:
        raise ToolkitError("bad --http-port", expected="1..65535", found=str(args.http_port))
    env = require_env()
    repo = prepare_repo(args)
    models = repo_models(repo)
    check_backends(models, env.backends)
    return serve(TritonServer(repo, args.http_port, env=env, log_path=args.log), models)
