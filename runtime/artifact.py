"""Artifact metadata: what the runtime needs to know about an ONNX file or a TensorRT engine.

ONNX files carry it inside (``metadata_props`` key ``nonlocalnet``, a JSON object); engines carry
it in a sidecar ``<engine>.json``. The runtime needs nothing but the artifact path.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runtime.errors import ToolkitError

META_KEY = "nonlocalnet"
FORMAT_VERSION = 1
PRECISIONS = ("fp32", "fp16", "int8")
OUTPUT_KINDS = ("logits", "labels")


@dataclass(frozen=True)
class ArtifactMeta:
    """Everything the runtime must know to feed an artifact and read its output."""

    variant: str
    num_classes: int
    class_names: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    crop: tuple[int, int]                     # (H, W) of the static input
    mean: tuple[float, float, float]          # RGB, 0-255 scale
    std: tuple[float, float, float]
    batch: int = 1
    output: str = "logits"                    # "logits" (N,K,H,W float) or "labels" (N,H,W int32)
    precision: str = "fp32"                   # "fp32" | "fp16" | "int8"
    layout: str = ""                          # INT8: "trt" or "ort"; FP16: "fp32-attention"/"all-fp16"
    input_name: str = "input"
    output_name: str = "output"
    checkpoint_sha256: str = ""
    random_init: bool = False
    extra: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    def __post_init__(self) -> None:
        if self.output not in OUTPUT_KINDS:
            raise ToolkitError(f"unknown output kind {self.output!r}", expected=" or ".join(OUTPUT_KINDS))
        if self.precision not in PRECISIONS:
            raise ToolkitError(f"unknown precision {self.precision!r}", expected=", ".join(PRECISIONS))

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        return (self.batch, 3, self.crop[0], self.crop[1])

    def replace(self, **changes: Any) -> "ArtifactMeta":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["format_version"] = FORMAT_VERSION
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ArtifactMeta":
        names = {f.name for f in dataclasses.fields(cls)}
        missing = [n for n in ("variant", "num_classes", "crop", "mean", "std") if n not in d]
        if missing:
            raise ToolkitError("artifact metadata is incomplete", expected="keys " + ", ".join(missing),
                               fix="re-export the artifact with export/to_onnx.py")
        kw = {k: v for k, v in d.items() if k in names}
        kw["class_names"] = tuple(kw.get("class_names", ()))
        kw["palette"] = tuple(tuple(int(c) for c in p) for p in kw.get("palette", ()))
        kw["crop"] = tuple(int(v) for v in kw["crop"])
        kw["mean"] = tuple(float(v) for v in kw["mean"])
        kw["std"] = tuple(float(v) for v in kw["std"])
        return cls(**kw)


def read_onnx_meta(path: str | Path) -> ArtifactMeta:
    """Read the toolkit metadata stored inside an ONNX file (no ``onnx`` package needed: a Jetson
    may have only TensorRT or ONNX Runtime; see :func:`read_metadata_props`)."""
    path = Path(path)
    if not path.is_file():
        raise ToolkitError(f"ONNX file not found: {path}")
    return meta_from_props(read_metadata_props(path), str(path))


MODEL_METADATA_FIELD = 14        # onnx.proto: ModelProto.metadata_props (StringStringEntryProto)


def read_metadata_props(path: str | Path) -> dict[str, str]:
    """``ModelProto.metadata_props`` of an ONNX file by a minimal protobuf read: the top-level
    fields are walked and all but field 14 skipped by length (the graph is never parsed)."""
    path = Path(path)
    size = path.stat().st_size
    props: dict[str, str] = {}
    try:
        with open(path, "rb") as f:
            while f.tell() < size:
                field_no, wire = divmod(_varint(f), 8)
                payload = _skip_or_read(f, wire, field_no == MODEL_METADATA_FIELD, size)
                if payload is not None:
                    entry = _entry(payload)
                    props[entry.get(1, "")] = entry.get(2, "")
    except (ValueError, UnicodeDecodeError) as exc:
        raise ToolkitError(f"cannot read ONNX file {path}", found=str(exc),
                           fix="re-export it; the file may be truncated") from None
    return props


def _varint(f: Any) -> int:
    shift = value = 0
    while True:
        byte = f.read(1)
        if not byte:
            raise ValueError("unexpected end of file in a varint")
        value |= (byte[0] & 0x7F) << shift
        if byte[0] < 0x80:
            return value
        shift += 7
        if shift > 63:
            raise ValueError("malformed varint")


def _skip_or_read(f: Any, wire: int, read: bool, size: int) -> bytes | None:
    """Skip one field value (or return it, for a length-delimited field when ``read``)."""
    if wire == 0:
        _varint(f)
        return None
    if wire in (1, 5):
        f.seek(8 if wire == 1 else 4, 1)
        return None
    if wire != 2:
        raise ValueError(f"unexpected protobuf wire type {wire}")
    length = _varint(f)
    if f.tell() + length > size:
        raise ValueError("a field runs past the end of the file")
    if read:
        return f.read(length)
    f.seek(length, 1)
    return None


def _entry(payload: bytes) -> dict[int, str]:
    """A StringStringEntryProto: field 1 key, field 2 value (both strings)."""
    import io

    buf, out = io.BytesIO(payload), {}
    while buf.tell() < len(payload):
        field_no, wire = divmod(_varint(buf), 8)
        value = _skip_or_read(buf, wire, True, len(payload))
        if value is not None:
            out[field_no] = value.decode("utf-8")
    return out


def meta_from_props(props: dict[str, str], source: str) -> ArtifactMeta:
    """Build metadata from an ONNX ``metadata_props`` / ORT ``custom_metadata_map`` mapping."""
    if META_KEY not in props:
        raise ToolkitError(f"{source} carries no toolkit metadata (key {META_KEY!r})",
                           fix="export it with export/to_onnx.py, which writes the metadata")
    return ArtifactMeta.from_dict(json.loads(props[META_KEY]))


def sidecar_path(engine_path: str | Path) -> Path:
    """``model.engine`` -> ``model.engine.json``."""
    p = Path(engine_path)
    return p.with_name(p.name + ".json")


def read_sidecar(engine_path: str | Path) -> tuple[ArtifactMeta, dict[str, Any]]:
    """Read an engine's sidecar: the metadata plus the build facts (TensorRT version, GPU, ...)."""
    side = sidecar_path(engine_path)
    if not side.is_file():
        raise ToolkitError(f"engine sidecar not found: {side}",
                           fix="rebuild the engine with export/to_trt.py, which writes it")
    data = json.loads(side.read_text())
    return ArtifactMeta.from_dict(data["meta"]), data.get("build", {})
