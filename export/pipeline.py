"""Precision artifacts from the FP32 ONNX: FP16/mixed and INT8 Q/DQ (TensorRT and ORT-CPU layouts).

Every artifact is written under a temporary name, verified with ONNX Runtime against the FP32
ONNX on the verification tiles, given its metadata (incl. the verification figures and a reuse
key), then renamed. The reuse key is a hash of everything its content depends on (FP32 file
sha256, options, calibration-set hash, recipe version); an artifact whose stored key matches is
reused without recomputation, and the log says so.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from calibration.graph import DEFAULT_KEEP, DEFAULT_KEEP_INT8
from export.exporter import artifact_name, digest, read_existing_meta, write_meta
from runtime.artifact import ArtifactMeta
from runtime.errors import ToolkitError
from runtime.fileio import atomic_path, sha256_file

FP16_RECIPE = 1
INT8_RECIPE = 4            # 2: attention scale folded; 3: only used opset domains; 4: residual/pool Q/DQ
MIXED_RECIPE = 2           # INT8+FP16 for strongly typed TensorRT; 2: opset 19, FP16 scales, no Casts at Q/DQ
# Which TensorRT each TensorRT-layout file is for (metadata ``trt_target``; export/trt_builder.py routes by it)
TRT_TARGETS = {
    "weak": {"typing": "weak", "tensorrt": "8.5/8.6 (JetPack 5, 6.0): INT8+FP16 builder flags, attention pinned FP32",
             "onnx": "opset 17, FP32 Q/DQ scales", "onnxruntime": "1.16+ (CPU check); its TensorRT provider"},
    "strong": {"typing": "strong", "tensorrt": "10.x/11.x (JetPack 6.1+): strongly typed, precisions from the file",
               "onnx": "opset 19, FP16 Q/DQ scales", "onnxruntime": "1.16+ (CPU check)"},
}
FP16_MIN_AGREEMENT = 0.995
INT8_MIN_AGREEMENT = 0.95


@dataclass
class Artifact:
    """One ONNX artifact: ``role`` is fp32 | fp16 | int8-trt | int8-ort | int8-fp16."""

    role: str
    path: Path
    meta: ArtifactMeta
    reused: bool
    notes: list[str] = field(default_factory=list)

    @property
    def verify(self) -> dict[str, Any]:
        return dict(self.meta.extra.get("verify", {}))


class Verifier:
    """Runs artifacts on the verification tiles and compares them with the FP32 ONNX outputs."""

    def __init__(self, fp32_path: Path, tiles: Any, enforce: bool, log: Callable[[str], None],
                 why_not: str = "random init") -> None:
        self.fp32_path, self.tiles, self.enforce, self.log = fp32_path, tiles, enforce, log
        self.why_not = why_not
        self._reference: Any = None

    def reference(self) -> Any:
        from export.verify import run_onnx

        if self._reference is None:
            self._reference = run_onnx(self.fp32_path, self.tiles.tiles)
        return self._reference

    def check(self, path: Path, what: str, minimum: float) -> dict[str, Any]:
        """Agreement of ``path`` with the FP32 ONNX; raise below ``minimum`` (when enforced) or on NaN."""
        from export.verify import agreement, format_agreement, run_onnx

        stats = agreement(self.reference(), run_onnx(path, self.tiles.tiles))
        note = "" if self.enforce else f" ({self.why_not}: reported, not enforced)"
        self.log(format_agreement(f"{what} vs FP32 ONNX", stats) + note)
        failed = stats.get("nonfinite") or (self.enforce and stats["agreement"] < minimum)
        if failed:
            raise ToolkitError(f"{what} failed verification: {format_agreement(what, stats)}",
                               expected=f"pixel agreement >= {100 * minimum:.1f}% and no NaN/Inf",
                               fix="keep more nodes in float (--keep-fp32 / --keep-int8) or use another "
                                   "calibration method; the artifact was not written")
        return {"against": "fp32-onnx", "on": self.tiles.source, "enforced_minimum": minimum if self.enforce
                else None, **stats}


def _reuse(path: Path, key: str, role: str, log: Callable[[str], None]) -> Artifact | None:
    old = read_existing_meta(path)
    if old is not None and old.extra.get("build_key") == key:
        log(f"reusing {path} (inputs unchanged; key {key[:12]})")
        return Artifact(role, path, old, True)
    return None


def _finish(tmp: Path, meta: ArtifactMeta) -> None:
    import onnx

    from calibration.graph import make_portable

    proto = onnx.load(str(tmp))
    make_portable(proto)          # ONNX Runtime 1.16/1.17 refuse unused domains (ai.onnx.ml 5)
    write_meta(proto, meta)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(tmp))


def make_fp16(fp32: Artifact, verifier: Verifier, keep: Sequence[str] = DEFAULT_KEEP,
              log: Callable[[str], None] = print) -> Artifact:
    """The FP16/mixed artifact (FP32 I/O; ``keep`` stays FP32)."""
    import onnx

    from export.precision import convert_fp16, layout_name, precision_summary

    fp32_sha = sha256_file(fp32.path)
    key = digest({"recipe": FP16_RECIPE, "fp32": fp32_sha, "keep": list(keep)})
    tag = {"fp32-attention": "fp16", "all-fp16": "fp16-all"}.get(layout_name(keep), "fp16-custom")
    path = fp32.path.with_name(artifact_name(fp32.meta, tag))
    reused = _reuse(path, key, "fp16", log)
    if reused:
        return reused
    model, kept = convert_fp16(onnx.load(str(fp32.path)), keep)
    counts = precision_summary(model)
    log(f"FP16: {counts['fp16_nodes']} nodes FP16, {counts['fp32_nodes']} kept FP32 ({', '.join(keep) or 'none'}), "
        f"{counts['casts']} casts")
    meta = fp32.meta.replace(precision="fp16", layout=layout_name(keep),
                             extra={**_base_extra(fp32.meta), "source_onnx_sha256": fp32_sha,
                                    "keep_fp32": list(keep), "kept_fp32_nodes": kept, "build_key": key})
    with atomic_path(path) as tmp:
        onnx.save(model, str(tmp))
        verify = verifier.check(tmp, "FP16 ONNX", FP16_MIN_AGREEMENT)
        meta = meta.replace(extra={**meta.extra, "verify": verify})
        _finish(tmp, meta)
    log(f"wrote {path}")
    return Artifact("fp16", path, meta, False)


def _base_extra(meta: ArtifactMeta) -> dict[str, Any]:
    return {k: v for k, v in meta.extra.items() if k in ("versions", "opset", "exporter")}


@dataclass
class CalibRequest:
    """Where and how to calibrate."""

    data: str
    method: str = "entropy"
    percentile: float | None = None
    max_images: int = 500
    seed: int = 0


def calibration_set(fp32: Artifact, req: CalibRequest, progress: bool = True) -> Any:
    from calibration.calibset import build_calibration_set

    return build_calibration_set(req.data, fp32.meta.crop, fp32.meta.mean, fp32.meta.std,
                                 cache_dir=fp32.path.parent / "calibration", max_images=req.max_images,
                                 seed=req.seed, progress=progress)


def make_int8(fp32: Artifact, calib: Any, req: CalibRequest, verifier: Verifier,
              keep: Sequence[str] = DEFAULT_KEEP_INT8, log: Callable[[str], None] = print,
              progress: bool = True) -> list[Artifact]:
    """The INT8 Q/DQ artifacts from one calibration: TensorRT layout, ORT-CPU layout and the mixed
    INT8+FP16 file made from the TensorRT one (:func:`make_int8_fp16`), in that order."""
    fp32_sha = sha256_file(fp32.path)
    keys = {layout: digest({"recipe": INT8_RECIPE, "fp32": fp32_sha, "calib": calib.key, "method": req.method,
                            "percentile": req.percentile, "layout": layout, "keep": list(keep)})
            for layout in ("trt", "ort")}
    paths = {layout: fp32.path.with_name(artifact_name(fp32.meta, f"int8_{layout}")) for layout in keys}
    done = {layout: _reuse(paths[layout], keys[layout], f"int8-{layout}", log) for layout in keys}
    if all(done.values()):
        return [done["trt"], done["ort"], make_int8_fp16(done["trt"], verifier, log)]
    cdir = fp32.path.parent / "calibration"
    pre = _preprocessed(fp32.path, fp32_sha, cdir)
    tag = req.method + (f"-{req.percentile}" if req.percentile else "")
    ranges = cdir / f"ranges{INT8_RECIPE}_{fp32_sha[:12]}_{calib.key[:12]}_{tag}.json"
    from calibration.qdq import compute_ranges

    log(calib.describe())
    if not compute_ranges(pre, calib, req.method, req.percentile, ranges, fp32.meta.batch, progress):
        log(f"reusing activation ranges {ranges.name}")
    out = []
    for layout in ("trt", "ort"):
        art = done[layout] or _quantize_one(fp32, pre, ranges, layout, keys[layout], paths[layout],
                                            calib, req, verifier, keep, log)
        out.append(art)
    return out + [make_int8_fp16(out[0], verifier, log)]


def make_int8_fp16(trt: Artifact, verifier: Verifier, log: Callable[[str], None] = print) -> Artifact:
    """The INT8 file for strongly typed TensorRT 10/11 (``_int8_fp16``, layout ``trt+fp16``) from the
    TensorRT-layout Q/DQ file: INT8 convolutions, other layers FP16, the affinity FP32, opset 19 with
    FP16 scales and no Cast at any Q/DQ (:func:`export.precision.convert_int8_fp16`)."""
    import onnx

    from export.precision import convert_int8_fp16, precision_summary

    source_sha = sha256_file(trt.path)
    key = digest({"recipe": MIXED_RECIPE, "int8_trt": source_sha, "keep": list(DEFAULT_KEEP)})
    path = trt.path.with_name(artifact_name(trt.meta, "int8_fp16"))
    reused = _reuse(path, key, "int8-fp16", log)
    if reused:
        return reused
    model, kept, scales = convert_int8_fp16(onnx.load(str(trt.path)), DEFAULT_KEEP)
    name = "INT8+FP16 Q/DQ (TensorRT 10/11)"
    fusion = fusion_check(model, "strong", trt.meta.extra.get("kept_float_nodes", []), name)
    counts = precision_summary(model)
    notes = [fusion.summary(),
             f"{counts['fp16_nodes']} nodes FP16, {len(kept)} kept FP32 (attention), {counts['casts']} casts; "
             f"{scales['scales']} FP16 scales ({scales['subnormal']} subnormal values, {scales['raised']} raised to "
             "the smallest FP16)"]
    for note in notes:
        log(f"{name}: {note}")
    extra = {k: v for k, v in trt.meta.extra.items() if k not in ("verify", "build_key", "layout_check", "fusion")}
    meta = trt.meta.replace(layout="trt+fp16", extra={
        **extra, "source_int8_trt_sha256": source_sha, "keep_fp32": list(DEFAULT_KEEP),
        "kept_fp32_nodes": kept, "build_key": key, "layout_check": notes,
        "fusion": fusion.counts(), "fp16_scales": scales, "trt_target": TRT_TARGETS["strong"]})
    write_meta(model, meta)        # before the check: ONNX Runtime's session set-up reads the layout
    with atomic_path(path) as tmp:
        onnx.save(model, str(tmp))
        meta = meta.replace(extra={**meta.extra, "verify": verifier.check(tmp, name, INT8_MIN_AGREEMENT)})
        _finish(tmp, meta)
    log(f"wrote {path}")
    return Artifact("int8-fp16", path, meta, False, notes)


def fusion_check(model: Any, target: str, kept: Sequence[str], what: str) -> Any:
    """:func:`calibration.fusion.check_fusion`, raising when a layer would not run INT8 (a bug in the recipe)."""
    from calibration.fusion import check_fusion

    report = check_fusion(model, target, kept)
    if not report.ok:
        raise ToolkitError(f"{what} would not fuse into INT8 kernels: " + "; ".join(report.problems()[:4]),
                           fix="report this model; the file was not written")
    return report


def _preprocessed(fp32_path: Path, fp32_sha: str, cdir: Path) -> Path:
    from calibration.qdq import preprocess

    pre = cdir / f"pre{INT8_RECIPE}_{fp32_sha[:12]}.onnx"
    if not pre.is_file():
        with atomic_path(pre) as tmp:
            preprocess(fp32_path, tmp)
    return pre


def _quantize_one(fp32: Artifact, pre: Path, ranges: Path, layout: str, key: str, path: Path, calib: Any,
                  req: CalibRequest, verifier: Verifier, keep: Sequence[str],
                  log: Callable[[str], None]) -> Artifact:
    from calibration.qdq import quantize

    name = {"trt": "INT8 Q/DQ (TensorRT 8.x layout)", "ort": "INT8 Q/DQ (ORT-CPU layout)"}[layout]
    with atomic_path(path) as tmp:
        kept = quantize(pre, ranges, tmp, layout, req.method, keep, calib)
        notes, fusion = _layout_notes(layout, tmp, kept, name)
        for note in notes:
            log(f"{name}: {note}")
        verify = verifier.check(tmp, name, INT8_MIN_AGREEMENT)
        calib_facts = {"method": req.method, "percentile": req.percentile, "tiles": len(calib),
                       "images": calib.n_images, "set_key": calib.key, "seed": req.seed}
        target = {"trt_target": TRT_TARGETS["weak"], "fusion": fusion} if layout == "trt" else {}
        meta = fp32.meta.replace(precision="int8", layout=layout, extra={
            **_base_extra(fp32.meta), "source_onnx_sha256": sha256_file(fp32.path), "calibration": calib_facts,
            "keep_float": list(keep), "kept_float_nodes": kept, "build_key": key, "verify": verify,
            "layout_check": notes, **target})
        _finish(tmp, meta)
    log(f"wrote {path}")
    return Artifact(f"int8-{layout}", path, meta, False, notes)


def _layout_notes(layout: str, path: Path, kept: Sequence[str], what: str) -> tuple[list[str], dict | None]:
    """Check the layout: the fusion check (TensorRT) or ONNX Runtime's own fused graph (ORT-CPU);
    a layout that does not fuse is a bug in the recipe, reported as an error."""
    import onnx

    from calibration.qdq import fused_ops, integer_kernel_count

    if layout == "trt":
        report = fusion_check(onnx.load(str(path)), "weak", kept, what)
        return [report.summary(), "symmetric INT8, zero points 0, per-channel weights, float bias, FP32 scales, "
                                  "opset 17"], report.counts()
    counts = fused_ops(path)
    fused = integer_kernel_count(counts)
    if fused == 0:
        raise ToolkitError("ONNX Runtime fused no integer kernels in the ORT-CPU layout",
                           found=", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    kernels = ", ".join(f"{v} {k}" for k, v in sorted(counts.items()) if k.startswith(("QLinear", "MatMulInteger")))
    return [f"ONNX Runtime runs integer kernels: {kernels}"], None


def verification_data(data: str | None, calib_data: str | None) -> str | None:
    """Images for the checks: --data, else the calibration images, else None (synthetic scenes)."""
    if data and not os.path.isdir(data):
        raise ToolkitError(f"--data directory not found: {data}", fix="pass a dataset root or an image folder")
    return data or calib_data
