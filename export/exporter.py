"""Export a NonLocalNet variant to a static-crop FP32 ONNX file with the toolkit metadata inside.

    python export/to_onnx.py --model r18os8_cityscapes --checkpoint ckpt.pth [--crop 512x1024]
        [--batch 1] [--output logits|labels] [--data DIR] [--out artifacts]

One file (no external weights), opset 17 (the highest every supported TensorRT parses), the
TorchScript exporter (``dynamo=False``: what TensorRT deployments use), ``onnx.checker`` passed,
simplified with onnx-simplifier when it is installed. After the export the file is checked
against PyTorch through ONNX Runtime (max |diff| and pixel agreement, >= 99.99% required).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from runtime.artifact import META_KEY, ArtifactMeta
from runtime.errors import ToolkitError
from runtime.fileio import atomic_path, ensure_writable_dir, sha256_file

OPSET = 17
EXPORT_RECIPE = 1            # bump when the export recipe changes: invalidates reuse keys
FP32_MIN_AGREEMENT = 0.9999
RANDOM_INIT_SEED = 0


def check_crop(variant: Any, crop: Sequence[int] | None) -> tuple[int, int]:
    """The static crop: the variant's by default; each side divisible by the output stride.

    Sides of the form k*stride + 1 (769, 1025: mmseg's Cityscapes test crops) are accepted too:
    their feature grid is corner-aligned with the image just as k*stride sides are.
    """
    h, w = (int(c) for c in (crop or variant.crop))
    s = int(variant.output_stride)
    bad = [d for d in (h, w) if d < 2 * s or d % s not in (0, 1)]
    if bad:
        near = ", ".join(str(round(d / s) * s) for d in (h, w))
        raise ToolkitError(f"crop {h}x{w} does not fit {variant.name} (output stride {s})",
                           expected=f"each side a multiple of {s} (or a multiple plus 1), at least {2 * s}",
                           found=f"{h}x{w}", fix=f"use e.g. --crop {near.replace(', ', 'x')}")
    return h, w


def artifact_name(meta: ArtifactMeta, precision: str | None = None, ext: str = ".onnx") -> str:
    """``{variant}_{H}x{W}[_b{N}][_labels][_{precision}].onnx`` (batch and labels only when not default)."""
    tags = [f"b{meta.batch}"] if meta.batch != 1 else []
    tags += ["labels"] if meta.output == "labels" else []
    tags += [precision] if precision else []
    return "_".join([meta.variant, f"{meta.crop[0]}x{meta.crop[1]}", *tags]) + ext


def digest(obj: Any) -> str:
    """sha256 of a JSON-serialisable object (the reuse keys stored in the artifacts)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def versions() -> dict[str, str]:
    """Versions of the tools that made an artifact (stored in its metadata)."""
    import importlib.metadata as md

    out = {}
    for name in ("torch", "onnx", "onnxruntime", "onnxsim", "nonlocalnet-deploy"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            continue
    return out


@dataclass
class Source:
    """Where the weights come from: a checkpoint file (with its sha256) or a seeded random init."""

    variant: Any
    checkpoint: Path | None
    sha256: str
    random_init: bool

    @property
    def label(self) -> str:
        return "RANDOM INIT (dry run, not a trained model)" if self.random_init else str(self.checkpoint)


def resolve_source(model: str, checkpoint: str | None, random_init: bool) -> Source:
    """Decide the weights: --checkpoint PATH, --random-init, or the variant's released file."""
    from runtime.zoo import get_variant

    variant = get_variant(model)
    if checkpoint and random_init:
        raise ToolkitError("--checkpoint and --random-init contradict each other",
                           fix="pass one of them")
    if random_init:
        return Source(variant, None, "", True)
    if checkpoint:
        path = Path(checkpoint)
        if not path.is_file():
            raise ToolkitError(f"checkpoint not found: {path}", fix="pass --checkpoint PATH to a .pth file")
        return Source(variant, path, sha256_file(path), False)
    return Source(variant, _fetch_release(variant), "", False)


def _fetch_release(variant: Any) -> Path:
    from models.checkpoints import fetch_release

    return fetch_release(variant, also="--random-init for a dry run of the pipeline")


def build_model(source: Source) -> Any:
    """The eval-mode torch model (a random init is seeded, so re-runs are reproducible)."""
    import torch

    from models import create_model

    if source.random_init:
        torch.manual_seed(RANDOM_INIT_SEED)
    return create_model(source.variant.name, checkpoint=source.checkpoint).eval()


def build_meta(source: Source, crop: Sequence[int], batch: int, output: str) -> ArtifactMeta:
    """The metadata stored in every artifact made from this source."""
    v = source.variant
    ds = v.dataset
    sha = source.sha256 or (sha256_file(source.checkpoint) if source.checkpoint else "")
    return ArtifactMeta(variant=v.name, num_classes=ds.num_classes, class_names=tuple(ds.class_names),
                        palette=tuple(tuple(p) for p in ds.palette), crop=(int(crop[0]), int(crop[1])),
                        mean=tuple(ds.mean), std=tuple(ds.std), batch=int(batch), output=output,
                        precision="fp32", input_name="input", output_name=output,
                        checkpoint_sha256=sha, random_init=source.random_init,
                        extra={"versions": versions(), "opset": OPSET, "exporter": "torch.onnx (TorchScript)"})


def export_key(meta: ArtifactMeta) -> str:
    """What decides the FP32 file's content (the reuse key stored in its metadata)."""
    init = f"random:{RANDOM_INIT_SEED}" if meta.random_init else meta.checkpoint_sha256
    return digest({"recipe": EXPORT_RECIPE, "variant": meta.variant, "crop": meta.crop, "batch": meta.batch,
                   "output": meta.output, "opset": OPSET, "weights": init,
                   "versions": {k: meta.extra["versions"].get(k) for k in ("torch", "onnx", "onnxsim")}})


def write_meta(model: Any, meta: ArtifactMeta) -> None:
    """Store ``meta`` as JSON under ``metadata_props['nonlocalnet']`` (replacing an older entry)."""
    kept = [p for p in model.metadata_props if p.key != META_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    entry = model.metadata_props.add()
    entry.key, entry.value = META_KEY, meta.to_json()
    model.producer_name = "nonlocalnet-deploy"


def with_argmax(model: Any) -> Any:
    """Wrap ``model`` so the graph ends in ArgMax -> Cast(INT32): (N, H, W) class ids."""
    import torch

    class ArgmaxHead(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.argmax(self.inner(x), dim=1).to(torch.int32)

    return ArgmaxHead(model).eval()


def torch_to_onnx(model: Any, path: Path, meta: ArtifactMeta, simplify: bool = True) -> list[str]:
    """Export, simplify, check and write ``path`` (a temporary path; the caller renames it)."""
    import warnings

    import onnx
    import torch

    from calibration.graph import make_portable

    net = with_argmax(model) if meta.output == "labels" else model
    dummy = torch.zeros(meta.input_shape, dtype=torch.float32)
    notes = []
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter is deprecated in torch >= 2.9
        torch.onnx.export(net, (dummy,), str(path), dynamo=False, opset_version=OPSET,
                          input_names=["input"], output_names=[meta.output], do_constant_folding=True)
    proto = onnx.load(str(path))
    if simplify:
        proto, note = _simplify(proto)
        notes.append(note)
    make_portable(proto)
    onnx.checker.check_model(proto, full_check=True)
    write_meta(proto, meta)
    onnx.save(proto, str(path))
    return notes


def _simplify(proto: Any) -> tuple[Any, str]:
    try:
        import onnxsim
    except ImportError:
        return proto, "onnx-simplifier not installed: graph left as exported (pip install onnxsim)"
    simplified, ok = onnxsim.simplify(proto)
    if not ok:
        return proto, "onnx-simplifier could not validate its result: graph left as exported"
    return simplified, f"simplified with onnx-simplifier ({len(proto.graph.node)} -> {len(simplified.graph.node)} nodes)"


def parity(model: Any, onnx_path: Path, tiles: Any, batch: int) -> dict[str, float]:
    """Agreement of the ONNX file (ONNX Runtime) with the torch model on ``tiles``."""
    import numpy as np
    import torch

    from export.verify import agreement, run_batched, run_onnx

    def torch_fn(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(x)).numpy()

    reference = run_batched(torch_fn, tiles, batch, desc="PyTorch reference")
    return agreement(reference, run_onnx(onnx_path, tiles))


def check_parity(stats: dict[str, float], what: str, minimum: float = FP32_MIN_AGREEMENT) -> None:
    if stats["agreement"] < minimum or stats.get("nonfinite"):
        from export.verify import format_agreement

        raise ToolkitError(f"{what} disagrees with its reference: {format_agreement(what, stats)}",
                           expected=f"pixel agreement >= {100 * minimum:.2f}% and no NaN/Inf",
                           fix="report this with the command line; the artifact was not written")


def read_existing_meta(path: Path) -> ArtifactMeta | None:
    """The metadata of an existing artifact, or None if it is missing or unreadable."""
    from runtime.artifact import read_onnx_meta

    if not path.is_file():
        return None
    try:
        return read_onnx_meta(path)
    except ToolkitError:
        return None


def export_fp32(source: Source, out_dir: Path, crop: Sequence[int] | None = None, batch: int = 1,
                output: str = "logits", data: str | None = None, simplify: bool = True,
                log: Any = print) -> tuple[Path, ArtifactMeta, bool]:
    """Export (or reuse) the FP32 ONNX. Returns ``(path, meta, reused)``."""
    from export.verify import format_agreement, verification_tiles

    if int(batch) < 1:
        raise ToolkitError("--batch must be >= 1", found=str(batch))
    crop = check_crop(source.variant, crop)
    meta = build_meta(source, crop, batch, output)
    key = export_key(meta)
    path = ensure_writable_dir(out_dir) / artifact_name(meta)
    old = read_existing_meta(path)
    if old is not None and old.extra.get("build_key") == key:
        log(f"reusing {path} (same weights, crop, batch and output; key {key[:12]})")
        return path, old, True
    model = build_model(source)
    with atomic_path(path) as tmp:
        for note in torch_to_onnx(model, tmp, meta, simplify):
            log(note)
        tiles = verification_tiles(data, crop, meta.mean, meta.std)
        log(f"verifying on {tiles.source}")
        stats = parity(model, tmp, tiles.tiles, meta.batch)
        log(format_agreement("FP32 ONNX vs PyTorch", stats))
        check_parity(stats, "FP32 ONNX")
        meta = meta.replace(extra={**meta.extra, "build_key": key,
                                   "verify": {"against": "pytorch", "on": tiles.source, **stats}})
        _rewrite_meta(tmp, meta)
    log(f"wrote {path}")
    return path, meta, False


def _rewrite_meta(path: Path, meta: ArtifactMeta) -> None:
    import onnx

    proto = onnx.load(str(path))
    write_meta(proto, meta)
    onnx.save(proto, str(path))
