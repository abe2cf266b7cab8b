"""The engine step of export/to_trt.py: artifact -> TensorRT engine + sidecar JSON, reused when unchanged.

Which ONNX becomes which engine (see export/trt_builder.py for the per-version route):
FP32 -> ``_fp32``-less name; FP16/mixed -> ``_fp16``; INT8 -> ``_int8``, from the file of the
installed TensorRT's generation: the strongly typed ``_int8_fp16.onnx`` (opset 19, FP16 scales) on
TensorRT 10/11, the ``_int8_trt.onnx`` (opset 17, FP32 scales) with INT8+FP16 builder flags and the
attention pinned FP32 on 8.x; both pass the fusion check (:mod:`calibration.fusion`) before the build.
--int8 --int8-implicit (TensorRT <= 10) -> FP32 ONNX + entropy calibrator -> ``_int8-implicit``. The sidecar ``<engine>.json`` holds the artifact metadata
and the build facts (TensorRT version, GPU, compute capability, sha256 of the ONNX, flags, route,
reuse key, agreement with the ONNX where ONNX Runtime is available).
"""
from __future__ import annotations

from dataclasses import dataclass, field
import json
import shlex
from pathlib import Path
from typing import Any, Callable

from runtime.artifact import read_onnx_meta, sidecar_path
from runtime.errors import ToolkitError
from runtime.fileio import atomic_open, sha256_file

ENGINE_RECIPE = 2          # 2: built with DETAILED profiling verbosity (export.layer_report reads it)


@dataclass
class EngineOptions:
    """What the engine step needs of the command line (export/to_trt.py's flags of the same names)."""

    fp16: bool = False
    int8: bool = False
    int8_implicit: bool = False
    workspace: float | None = None
    timing_cache: str | None = None
    data: str | None = None
    calib_data: str | None = None
    calib_images: int | None = None
    quiet: bool = False
    onnx: list[str] = field(default_factory=list)


def _tag(role: str, implicit: bool) -> str | None:
    if implicit:
        return "int8-implicit"
    return {"fp32": None, "fp16": "fp16", "int8-trt": "int8", "int8-fp16": "int8"}[role]


def engine_source(artifacts: list[Any], fp16: bool, int8: bool, implicit: bool,
                  strongly_typed: bool) -> tuple[Any, bool]:
    """(artifact to build from, best?) for the precision flags of a --model run.

    INT8 builds from the file of this TensorRT's generation (``Features.strongly_typed``): the
    strongly typed ``_int8_fp16`` file on 10/11, the ``_int8_trt`` file with INT8+FP16 builder flags
    on 8.x; either way the float layers run FP16 (``--fp16`` adds nothing). ``best`` (FP16 for the
    layers the calibrator leaves float) only applies to implicit INT8 with ``--fp16``.
    """
    roles = {a.role: a for a in artifacts}
    if int8 and implicit:
        return roles["fp32"], fp16
    if int8:
        return roles["int8-fp16" if strongly_typed else "int8-trt"], False
    return (roles["fp16"] if fp16 else roles["fp32"]), False


def _strongly_typed() -> bool:
    from export.trt_builder import Features, import_tensorrt

    return Features.detect(import_tensorrt()).strongly_typed


def build_engines(args: EngineOptions, artifacts: list[Any], calib: Any, log: Callable) -> list[str]:
    art, best = engine_source(artifacts, args.fp16, args.int8, args.int8_implicit, _strongly_typed())
    return [build_one(art, best, calib if args.int8_implicit else None, args, log)]


def build_one(art: Any, best: bool, calib: Any, args: EngineOptions, log: Callable) -> str:
    """Build (or reuse) the engine for one artifact; returns a summary line."""
    from export.exporter import artifact_name, digest
    from export.trt_builder import (Features, build_engine, build_facts, gpu_info, import_tensorrt, plan_build,
                                    timing_cache_file)

    trt = import_tensorrt()
    implicit = calib is not None
    precision = "int8" if implicit else art.meta.precision
    keep = art.meta.extra.get("kept_fp32_nodes") or art.meta.extra.get("kept_float_nodes") or []
    plan = plan_build(Features.detect(trt), precision, best=best, implicit=implicit, keep_fp32=keep,
                      layout=art.meta.layout)
    workspace = args.workspace or 4.0
    onnx_sha = sha256_file(art.path)
    gpu = gpu_info()
    key = digest({"recipe": ENGINE_RECIPE, "onnx": onnx_sha, "trt": trt.__version__, "gpu": gpu,
                  "plan": [plan.strongly_typed, plan.flags, plan.pin_fp32], "workspace": workspace,
                  "calib": getattr(calib, "key", None)})
    if precision == "int8" and not implicit:
        _check_fusion(art, plan.strongly_typed, keep, log)
    path = art.path.with_name(artifact_name(art.meta, _tag(art.role, implicit), ".engine"))
    if _engine_reusable(path, key):
        log(f"reusing {path} (same ONNX, TensorRT, GPU and options; key {key[:12]})")
        return f"engine    {path}  (reused)"
    if implicit:
        plan.calibrator = _calibrator(trt, art, calib, onnx_sha, log)
    cache = timing_cache_file(Path(args.timing_cache), trt.__version__, gpu) if args.timing_cache else None
    result = build_engine(art.path, plan, workspace, cache, log)
    with atomic_open(path, "wb") as f:
        f.write(result.engine)
    facts = {**build_facts(trt.__version__, result, art.path, onnx_sha), "build_key": key, "route": _route(plan, implicit),
             "workspace_gib": workspace, "timing_cache": str(cache) if cache else None}
    meta = art.meta.replace(precision=precision)
    facts["verify"] = {"failed": "verification did not finish"}    # until it has (no reuse before)
    _write_sidecar(path, meta, facts)              # the runtime's TensorRT backend reads it
    try:
        facts["verify"] = verify_engine(path, art.path, meta, args, log)
    except Exception as exc:       # the engine is finished: keep it, record why it is unverified
        facts["verify"] = {"failed": f"{type(exc).__name__}: {exc}"}
        _write_sidecar(path, meta, facts)
        log(f"kept {path}; its verification failed (recorded in {sidecar_path(path).name})")
        raise
    _write_sidecar(path, meta, facts)
    log(f"wrote {path} and {sidecar_path(path).name}")
    return f"engine    {path}  (built in {result.seconds:.0f} s, {facts['route']})"


def _check_fusion(art: Any, strongly_typed: bool, kept: list, log: Callable) -> None:
    """Refuse a Q/DQ file whose layers TensorRT would not fuse into INT8 (e.g. one written by an older
    version of this toolkit, with Casts around its Q/DQ); needs ``onnx`` (skipped, said, without it)."""
    try:
        import onnx
    except ImportError:
        log("fusion check skipped: the onnx package is not installed here")
        return
    from calibration.fusion import check_fusion

    report = check_fusion(onnx.load(str(art.path)), "strong" if strongly_typed else "weak", kept)
    if not report.ok:
        raise ToolkitError(f"{art.path.name} would not run INT8 in TensorRT: " + "; ".join(report.problems()[:3]),
                           fix="re-export it with this version of export/to_trt.py (--int8)")
    log(f"{art.path.name}: {report.summary()}")


def _write_sidecar(path: Path, meta: Any, facts: dict) -> None:
    with atomic_open(sidecar_path(path), "w") as f:
        json.dump({"meta": meta.to_dict(), "build": facts}, f, indent=1, sort_keys=True, default=str)


def _engine_reusable(path: Path, key: str) -> bool:
    side = sidecar_path(path)
    if not (path.is_file() and side.is_file()):
        return False
    try:
        build = json.loads(side.read_text()).get("build", {})
    except (OSError, ValueError):
        return False
    return build.get("build_key") == key and "failed" not in (build.get("verify") or {})


def _route(plan: Any, implicit: bool) -> str:
    if implicit:
        return "implicit INT8 (entropy calibrator)"
    return "strongly typed" if plan.strongly_typed else "builder flags " + (",".join(plan.flags) or "none")


def _calibrator(trt: Any, art: Any, calib: Any, onnx_sha: str, log: Callable) -> Any:
    from calibration.trt_calibrator import make_entropy_calibrator

    cache = art.path.parent / "calibration" / f"trt_calib_{onnx_sha[:12]}_{calib.key[:12]}.cache"
    log(f"{'reading' if cache.is_file() else 'writing'} TensorRT calibration cache {cache}")
    return make_entropy_calibrator(trt, calib, art.meta.batch, cache)


def verify_engine(engine: Path, onnx_path: Path, meta: Any, args: EngineOptions, log: Callable) -> dict:
    """Agreement of the engine with its source ONNX (ONNX Runtime) when ONNX Runtime exists here."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return {"skipped": "onnxruntime not installed on this machine"}
    from export.pipeline import verification_data
    from export.verify import agreement, format_agreement, run_batched, run_onnx, verification_tiles
    from runtime.backends import open_backend

    tiles = verification_tiles(verification_data(getattr(args, "data", None), getattr(args, "calib_data", None)),
                               meta.crop, meta.mean, meta.std)
    with open_backend(str(engine), backend="tensorrt") as backend:
        out = run_batched(backend, tiles.tiles, backend.input_shape[0])
    stats = agreement(run_onnx(onnx_path, tiles.tiles), out)
    log(format_agreement(f"engine vs {onnx_path.name} (ONNX Runtime)", stats))
    if stats.get("nonfinite"):
        raise ToolkitError(f"the engine produced NaN/Inf: {format_agreement('engine', stats)}",
                           fix="keep the attention in FP32 (the default) or build another precision")
    return {"against": onnx_path.name, "on": tiles.source, **stats}


def engines_from_files(args: EngineOptions, log: Callable) -> list[str]:
    """--onnx mode: one engine per given toolkit artifact (no PyTorch needed)."""
    from export.pipeline import Artifact, CalibRequest, calibration_set
    from export.trt_builder import INSTALL_HINT, tensorrt_status

    ok, reason = tensorrt_status()
    if not ok:
        raise ToolkitError(f"cannot build engines: {reason}",
                           fix=INSTALL_HINT.split(", or use")[0] + "; run this command on the target")
    lines = []
    for name in args.onnx:
        meta = read_onnx_meta(name)
        role = {"fp32": "fp32", "fp16": "fp16", "int8": f"int8-{meta.layout}"}[meta.precision]
        role = "int8-fp16" if role == "int8-trt+fp16" else role
        if role == "int8-ort":
            raise ToolkitError(f"{name} is the ONNX-Runtime-CPU INT8 layout, not for TensorRT",
                               fix="pass the *_int8_fp16.onnx (or *_int8_trt.onnx) artifact")
        if args.fp16 and role not in ("fp16", "int8-trt", "int8-fp16"):
            raise ToolkitError("--fp16 with --onnx builds from an FP16 or INT8 artifact, not an FP32 one",
                               fix="pass the *_fp16.onnx artifact (or drop --fp16 for an FP32 engine)")
        if args.int8_implicit and role != "fp32":
            raise ToolkitError("--int8 --int8-implicit calibrates an FP32 ONNX", fix="pass the FP32 artifact")
        art = Artifact(role, Path(name), meta, True)
        calib = None
        if args.int8_implicit:
            req = CalibRequest(args.calib_data, max_images=args.calib_images or 500)
            calib = calibration_set(art, req, progress=not args.quiet)
        lines.append(build_one(art, bool(args.fp16 and args.int8_implicit), calib, args, log))
    return lines


def target_command(args: EngineOptions, artifacts: list[Any]) -> str:
    """The command that builds the same engine on the target from the artifacts made here.

    The target's TensorRT is unknown here: --int8 names the strongly typed (10/11) file and adds the
    TensorRT 8.x file as the alternative.
    """
    art, _ = engine_source(artifacts, args.fp16, args.int8, args.int8_implicit, strongly_typed=True)
    command = _command(args, art)
    if args.int8 and not args.int8_implicit:
        legacy, _ = engine_source(artifacts, False, True, False, strongly_typed=False)
        command += f"   (TensorRT 8.x: {_command(args, legacy)})"
    return command


def _command(args: EngineOptions, art: Any) -> str:
    cmd = ["python", "export/to_trt.py", "--onnx", str(art.path)]
    if args.int8_implicit:
        cmd += ["--int8", "--int8-implicit", "--calib-data", args.calib_data]
    if args.workspace:
        cmd += ["--workspace", str(args.workspace)]
    if args.timing_cache:
        cmd += ["--timing-cache", args.timing_cache]
    return " ".join(shlex.quote(c) for c in cmd + ["--backend", "tensorrt"])
