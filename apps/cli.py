"""The one home of the commands' argument kit: counts, the model/backend flags and the one-line error
contract. Every command (apps/) builds on these; value parsers the library shares (``HxW``, mIoU
budgets) live in runtime/values.py."""
from __future__ import annotations

import argparse
import sys
from typing import Any, Callable, Sequence

from runtime.errors import ToolkitError
from runtime.values import dataset_name_of, drop_points, max_drop_limits, parse_hw  # noqa: F401 (the commands' kit)


def run_cli(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> int:
    """Run ``main``; a :class:`ToolkitError` becomes ``error: ...`` on stderr and exit code 2."""
    try:
        code = main(argv)
    except ToolkitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:          # a library may say how to go on (e.g. "... to resume")
        print("error: interrupted" + (f": {exc}" if str(exc) else ""), file=sys.stderr)
        return 130
    return int(code or 0)


OV_PRECISIONS = ("f32", "bf16", "f16", "auto")
OV_PRECISION_HELP = ("OpenVINO: precision of the float layers: f32 (default, the artifact's numerics), bf16 / f16 "
                     "(fast only where the CPU has them natively: AVX512-BF16 / AMX; elsewhere emulated and "
                     "slower, with a note), auto (OpenVINO's choice for this CPU)")


ALSO_OPENVINO_HELP = ("also run these .onnx artifacts with the OpenVINO backend, as rows of their own next to "
                     "--backend's (no FILE: every .onnx of --artifacts); --ov-precision sets their float precision")


def also_openvino_files(also: list[str] | None, artifacts: Sequence[str], backend: str = "auto") -> list[str]:
    """The files ``--also-openvino [FILE ...]`` names (none given: every .onnx of ``artifacts``);
    ``[]`` when the flag is absent."""
    if also is None:
        return []
    if backend.lower() in ("openvino", "ov"):
        raise ToolkitError("--also-openvino adds OpenVINO rows next to another backend's, but --backend is openvino",
                           fix="drop --also-openvino (every artifact already runs in OpenVINO)")
    files = list(also) or [a for a in artifacts if str(a).lower().endswith(".onnx")]
    bad = [f for f in files if not str(f).lower().endswith(".onnx")]
    if bad:
        raise ToolkitError("--also-openvino runs .onnx files only", found=", ".join(map(str, bad)),
                           fix="name .onnx artifacts after --also-openvino")
    if not files:
        raise ToolkitError("--also-openvino found no .onnx file among --artifacts",
                           fix="name the files: --also-openvino MODEL.onnx")
    return files


def positive_int(text: str) -> int:
    """argparse ``type=`` for counts that must be >= 1 (threads, frames, images)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, found {text!r}")
    return value


def non_negative_int(text: str) -> int:
    """argparse ``type=`` for counts where 0 means none (warm-up frames, retries, split sizes)."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, found {text!r}")
    return value


def add_model_arguments(p: argparse.ArgumentParser) -> Any:
    """The model / backend / tiling flags (video demo, segment); returns the group."""
    m = p.add_argument_group("model")
    m.add_argument("--model", help=".onnx / .engine artifact, triton://HOST:PORT/MODEL, or a variant name (PyTorch)")
    m.add_argument("--checkpoint", help="PyTorch only: checkpoint .pth (or 'pretrained')")
    m.add_argument("--crop", help="PyTorch only: tile size HxW (default: the variant's crop)")
    m.add_argument("--stride", help="tiled mode: tile stride HxW (default: 2/3 of the crop)")
    m.add_argument("--mode", default="tiled", choices=("tiled", "resize", "whole"),
                   help="tiled: sliding window (accurate); resize: one tile per frame (fast)")
    m.add_argument("--backend", default="auto",
                   help="auto | torch | onnxruntime | openvino | tensorrt | triton (auto: .onnx -> onnxruntime; "
                        "openvino runs the same .onnx files: pip install -e .[openvino])")
    m.add_argument("--device", help="PyTorch: cpu / cuda[:N]; TensorRT: GPU index")
    m.add_argument("--providers", help="ONNX Runtime: cpu | cuda | tensorrt")
    m.add_argument("--threads", type=positive_int, help="CPU threads for PyTorch / ONNX Runtime / OpenVINO")
    m.add_argument("--ov-precision", choices=OV_PRECISIONS, help=OV_PRECISION_HELP)
    add_triton_arguments(m)
    return m


def add_triton_arguments(p: Any) -> None:
    """``--url`` / ``--triton-model``: a tile model served by Triton (runtime.serve)."""
    p.add_argument("--url", help="Triton: server URL, e.g. http://127.0.0.1:8000 (with --triton-model)")
    p.add_argument("--triton-model", help="Triton: served tile model name (with --url)")


def triton_model_arg(args: argparse.Namespace) -> str | None:
    """The ``triton://`` artifact named by ``--url`` + ``--triton-model`` (None when neither is given)."""
    url, model = getattr(args, "url", None), getattr(args, "triton_model", None)
    if not (url or model):
        return None
    if not (url and model):
        raise ToolkitError("--url and --triton-model go together", fix="pass both, e.g. --url "
                           "http://127.0.0.1:8000 --triton-model r18os8_cityscapes_512x1024")
    if getattr(args, "backend", "auto") not in ("auto", "triton"):
        raise ToolkitError(f"--url/--triton-model name a Triton model, not a {args.backend} artifact",
                           fix="use --backend triton or auto")
    from runtime.backends.triton_backend import triton_artifact
    return triton_artifact(url, model)


def backend_options(args: argparse.Namespace, kind: str) -> dict[str, Any]:
    """Map the CLI flags onto ``open_backend`` options; flags that do not apply are errors."""
    torch_only = {"--checkpoint": args.checkpoint, "--crop": args.crop}
    if kind != "torch":
        given = [flag for flag, value in torch_only.items() if value]
        if given:
            raise ToolkitError(f"{', '.join(given)} only apply to a PyTorch variant, not {args.model}",
                               fix="the artifact carries its weights and crop; drop the flag")
    if kind == "triton":
        given = [flag for flag, value in (("--threads", args.threads), ("--device", args.device),
                                          ("--providers", args.providers)) if value]
        if given:
            raise ToolkitError(f"{', '.join(given)} do not apply to a model served by Triton",
                               fix="the server's config.pbtxt decides devices and threads (export/to_triton.py)")
        return {}
    if args.providers and kind != "onnxruntime":
        raise ToolkitError("--providers only applies to ONNX Runtime", found=f"{kind} for {args.model}")
    if getattr(args, "ov_precision", None) and kind != "openvino":
        raise ToolkitError("--ov-precision only applies to --backend openvino", found=kind)
    opts: dict[str, Any] = {}
    if kind == "torch":
        opts.update(checkpoint=args.checkpoint, device=args.device or "cpu", threads=args.threads)
        if args.crop:
            opts["crop"] = parse_hw(args.crop, "--crop")
    elif kind == "onnxruntime":
        if args.device:
            raise ToolkitError("--device does not apply to ONNX artifacts", fix="use --providers cuda")
        opts.update(providers=args.providers, threads=args.threads)
    elif kind == "openvino":
        if args.device:
            raise ToolkitError("--device does not apply to the OpenVINO backend", fix="it runs on the CPU; drop --device")
        opts.update(threads=args.threads, precision=getattr(args, "ov_precision", None) or "f32")
    else:
        if args.threads:
            raise ToolkitError("--threads does not apply to TensorRT engines")
        if args.device:
            index = str(args.device).split(":")[-1]
            if not index.isdigit():
                raise ToolkitError(f"bad --device {args.device!r} for a TensorRT engine",
                                   expected="a GPU index, e.g. 0 or cuda:0")
            opts["device"] = int(index)
    return opts


def model_spec(args: argparse.Namespace) -> tuple[str, str, dict[str, Any]]:
    """(artifact, backend, options) for ``--model`` (or ``--url`` + ``--triton-model``)."""
    from runtime.backends import backend_for

    served = triton_model_arg(args)
    if served and args.model:
        raise ToolkitError("pass either --model or --url/--triton-model, not both")
    args.model = served or args.model
    if not args.model:
        raise ToolkitError("no model given", fix="pass --model ARTIFACT|VARIANT, or --url URL --triton-model NAME")
    kind = backend_for(args.model, args.backend)
    return args.model, kind, backend_options(args, kind)


def open_model(args: argparse.Namespace) -> Any:
    """The (not yet open) backend for ``--model`` (or ``--url`` + ``--triton-model``)."""
    from runtime.backends import open_backend

    artifact, kind, opts = model_spec(args)
    return open_backend(artifact, kind, **opts)


RAY_ADDRESS_HELP = ("run on a Ray cluster: no ADDRESS starts a local Ray in this process; ADDRESS is what "
                    "ray.init(address=...) takes: auto, HOST:6379, ray://HOST:10001 (pip install -e \".[ray]\"); "
                    "after positional inputs, or as --ray=ADDRESS")


def add_ray_arguments(p: argparse.ArgumentParser, reference: bool = False) -> None:
    """``--ray [ADDRESS]`` and the actor flags (docs/ray.md)."""
    g = p.add_argument_group("Ray cluster (docs/ray.md)")
    g.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS", help=RAY_ADDRESS_HELP)
    g.add_argument("--ray-actors", type=positive_int, metavar="N",
                   help="actors holding the model" + (" artifacts" if reference else "")
                        + " (default: the cluster's CPUs / --threads, or GPUs / --ray-gpus-per-actor)")
    if reference:
        g.add_argument("--ray-reference-actors", type=positive_int, metavar="M",
                       help="actors holding the PyTorch reference (default: a share of the cluster by row count)")
    g.add_argument("--ray-gpus-per-actor", type=float, default=0.0, metavar="G",
                   help="GPUs per actor (TensorRT, ONNX Runtime CUDA; fractions share a GPU); default 0: CPU actors")


def ray_options(args: argparse.Namespace) -> Any:
    """The cluster options of ``--ray ...`` (None without ``--ray``); a one-line error when Ray is
    missing or an actor flag comes without ``--ray``."""
    given = [f for f, v in (("--ray-actors", args.ray_actors),
                            ("--ray-reference-actors", getattr(args, "ray_reference_actors", None)),
                            ("--ray-gpus-per-actor", args.ray_gpus_per_actor)) if v]
    if args.ray is None:
        if given:
            raise ToolkitError(f"{', '.join(given)} only apply with --ray", fix="add --ray [ADDRESS]")
        return None
    from runtime.cluster import ClusterOptions, check_address, import_ray

    import_ray()
    if args.ray_gpus_per_actor < 0:
        raise ToolkitError("--ray-gpus-per-actor must be >= 0", found=str(args.ray_gpus_per_actor))
    return ClusterOptions(address=check_address(args.ray), actors=args.ray_actors,
                          reference_actors=getattr(args, "ray_reference_actors", None),
                          threads=args.threads or 1, gpus_per_actor=args.ray_gpus_per_actor)


def options(args: argparse.Namespace, cls: Any) -> Any:
    """The parsed flags as the library's options dataclass ``cls`` (fields named like the flags)."""
    import dataclasses

    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in vars(args).items() if k in names})
