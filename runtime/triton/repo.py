"""Write a Triton model repository from the toolkit's artifacts.

One tile model per artifact (``.onnx`` -> ``onnxruntime_onnx``, or ``python`` = ONNX Runtime inside
Triton's Python backend; ``.engine`` -> ``tensorrt_plan``), I/O names, datatypes and dims from the
artifact, instance groups, dynamic batching, the artifact metadata as parameters; plus, per tile
model, a frame model (Python backend) that runs the toolkit's tiler and calls the tile model through
BLS, so clients send whole RGB frames and get the uint8 label map back.

Batching: the artifacts have a static batch B. With ``max_batch > 0`` an ONNX tile model gets a
verified dynamic-batch copy (runtime.triton.onnx_batch) so the dynamic batcher can merge tiles of
concurrent frames; ``max_batch = 0`` serves the artifact as it is (exactly B tiles per request, no
dynamic batching). Engines are static: always ``max_batch_size: 0``.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from runtime.artifact import ArtifactMeta, read_onnx_meta, read_sidecar
from runtime.errors import ToolkitError
from runtime.fileio import atomic_open, ensure_writable_dir, install_dir, sha256_file, temporary_dir

PLATFORMS = ("onnxruntime", "python")
KINDS = ("cpu", "gpu")
ONNX_TYPES = {1: "TYPE_FP32", 10: "TYPE_FP16", 6: "TYPE_INT32", 7: "TYPE_INT64", 2: "TYPE_UINT8", 3: "TYPE_INT8"}
HERE = Path(__file__).resolve().parent
RUNTIME_FILES = ("__init__.py", "errors.py", "artifact.py", "preprocess.py", "batches.py", "tiling.py")
LOADER_FILES = ("__init__.py", "errors.py", "loaders.py")     # the tile model's ONNX Runtime session


@dataclass(frozen=True)
class RepoOptions:
    """How to serve: ``platform`` for ONNX artifacts, instances per model, device kind, batching."""

    platform: str = "onnxruntime"
    instances: int = 1
    kind: str = "cpu"
    max_batch: int = 8
    preferred: tuple[int, ...] = ()
    delay_us: int = 1000
    frame_model: bool = True
    stride: tuple[int, int] | None = None
    frame_instances: int | None = None
    ort_threads: int = 0

    def check(self) -> None:
        if self.platform not in PLATFORMS:
            raise ToolkitError(f"unknown platform {self.platform!r}", expected=", ".join(PLATFORMS))
        if self.kind not in KINDS:
            raise ToolkitError(f"unknown instance kind {self.kind!r}", expected=", ".join(KINDS))
        if self.platform == "python" and self.kind == "gpu":
            raise ToolkitError("the python platform runs ONNX Runtime on the CPU inside Triton's Python backend",
                               fix="use --platform onnxruntime (Triton's ORT backend) for --kind gpu")
        if self.instances < 1 or self.max_batch < 0 or self.delay_us < 0:
            raise ToolkitError("bad serving options", expected="--instances >= 1, --max-batch >= 0, delay >= 0",
                               found=f"{self.instances}, {self.max_batch}, {self.delay_us}")
        if self.preferred and (self.max_batch == 0 or max(self.preferred) > self.max_batch or min(self.preferred) < 1):
            raise ToolkitError("--preferred-batch sizes must lie in 1..--max-batch",
                               found=f"{list(self.preferred)} with --max-batch {self.max_batch}")


@dataclass
class TileIO:
    """I/O of one tile artifact as Triton sees it (dims without the batch dimension)."""

    input_name: str
    input_type: str
    output_name: str
    output_type: str
    output_dims: list[int] = field(default_factory=list)


def model_name(path: str | Path) -> str:
    """Triton model name for an artifact: its file stem, characters outside [A-Za-z0-9_-] -> '_'."""
    stem = Path(path).name
    for suffix in (".onnx", ".engine", ".plan"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
    return re.sub(r"[^A-Za-z0-9_-]", "_", stem)


def onnx_io(path: Path) -> TileIO:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    inp, out = graph.input[0], graph.output[0]

    def ttype(value: Any) -> str:
        code = value.type.tensor_type.elem_type
        if code not in ONNX_TYPES:
            raise ToolkitError(f"{path.name}: tensor {value.name} has an ONNX type Triton config cannot name",
                               found=str(code))
        return ONNX_TYPES[code]

    dims = [d.dim_value for d in out.type.tensor_type.shape.dim][1:]
    return TileIO(inp.name, ttype(inp), out.name, ttype(out), dims)


def engine_io(meta: ArtifactMeta) -> TileIO:
    """Engines: the toolkit's engines keep FP32 input, FP32 logits or INT32 labels."""
    h, w = meta.crop
    if meta.output == "logits":
        return TileIO(meta.input_name, "TYPE_FP32", meta.output_name, "TYPE_FP32", [meta.num_classes, h, w])
    return TileIO(meta.input_name, "TYPE_FP32", meta.output_name, "TYPE_INT32", [h, w])


def pbtxt_string(text: str) -> str:
    """A protobuf text-format string literal."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _params(values: dict[str, str]) -> list[str]:
    return [f"parameters {{ key: {pbtxt_string(k)} value {{ string_value: {pbtxt_string(v)} }} }}"
            for k, v in values.items()]


def _dims(dims: Sequence[int]) -> str:
    return "[ " + ", ".join(str(int(d)) for d in dims) + " ]"


def tile_config(name: str, meta: ArtifactMeta, io: TileIO, platform: str, opts: RepoOptions,
                max_batch: int, params: dict[str, str]) -> str:
    """config.pbtxt of a tile model."""
    h, w = meta.crop
    in_dims = [3, h, w] if max_batch else [meta.batch, 3, h, w]
    out_dims = io.output_dims if max_batch else [meta.batch] + io.output_dims
    head = [f"name: {pbtxt_string(name)}",
            'backend: "python"' if platform == "python" else f"platform: {pbtxt_string(platform)}",
            f"max_batch_size: {max_batch}",
            f"input [ {{ name: {pbtxt_string(io.input_name)} data_type: {io.input_type} dims: {_dims(in_dims)} }} ]",
            f"output [ {{ name: {pbtxt_string(io.output_name)} data_type: {io.output_type} dims: {_dims(out_dims)} }} ]",
            f"instance_group [ {{ count: {opts.instances} kind: {'KIND_GPU' if opts.kind == 'gpu' else 'KIND_CPU'} }} ]"]
    if max_batch:
        pref = f"preferred_batch_size: {_dims(opts.preferred)} " if opts.preferred else ""
        head.append(f"dynamic_batching {{ {pref}max_queue_delay_microseconds: {opts.delay_us} }}")
    return "\n".join(head + _params(params)) + "\n"


def frame_config(name: str, tile_io: dict[str, Any], meta: ArtifactMeta, opts: RepoOptions) -> str:
    """config.pbtxt of the frame model: RGB uint8 (H, W, 3) in, uint8 label map (H, W) out."""
    stride = f"{opts.stride[0]}x{opts.stride[1]}" if opts.stride else ""
    lines = [f"name: {pbtxt_string(name)}", 'backend: "python"', "max_batch_size: 0",
             'input [ { name: "frame" data_type: TYPE_UINT8 dims: [ -1, -1, 3 ] } ]',
             'output [ { name: "labels" data_type: TYPE_UINT8 dims: [ -1, -1 ] } ]',
             f"instance_group [ {{ count: {opts.frame_instances or opts.instances} kind: KIND_CPU }} ]"]
    return "\n".join(lines + _params({"tile_model": tile_io["model"], "tile_io": json.dumps(tile_io), "stride": stride, "nonlocalnet": meta.to_json(),
                                      "role": "frame"})) + "\n"


def _write_text(path: Path, text: str) -> None:
    ensure_writable_dir(path.parent)
    with atomic_open(path, "w") as f:
        f.write(text)


def _copy(src: Path, dst: Path) -> None:
    ensure_writable_dir(dst.parent)
    with atomic_open(dst, "wb") as f, open(src, "rb") as s:
        shutil.copyfileobj(s, f)


def _write_onnx_model(src: Path, version_dir: Path, meta: ArtifactMeta, max_batch: int, log: Callable) -> None:
    """model.onnx: the artifact itself (max_batch 0) or its verified dynamic-batch copy."""
    dst = version_dir / "model.onnx"
    if not max_batch:
        _copy(src, dst)
        return
    import onnx

    from runtime.triton.onnx_batch import check_batch_dynamic, make_batch_dynamic

    model = make_batch_dynamic(onnx.load(str(src)), meta.batch)
    ensure_writable_dir(version_dir)
    with atomic_open(dst, "wb") as f:
        f.write(model.SerializeToString())
    diff = check_batch_dynamic(src, dst, meta.batch)
    log(f"  dynamic-batch copy checked: batch {2 * meta.batch} vs 2 x {meta.batch}, max |diff| {diff:.2g}")


def write_tile_model(artifact: Path, out: Path, opts: RepoOptions, log: Callable) -> tuple[dict[str, Any], ArtifactMeta]:
    """One tile model; returns (its I/O facts for the frame model, metadata)."""
    name = model_name(artifact)
    version = out / name / "1"
    if artifact.suffix.lower() == ".onnx":
        meta, io, platform = read_onnx_meta(artifact), onnx_io(artifact), opts.platform
        platform = "python" if platform == "python" else "onnxruntime_onnx"
        max_batch = opts.max_batch
        _write_onnx_model(artifact, version, meta, max_batch, log)
        if platform == "python":
            _copy(HERE / "model_tile_ort.py", version / "model.py")
            for file in LOADER_FILES:
                _copy(HERE.parent / file, version / "runtime" / file)
    elif artifact.suffix.lower() in (".engine", ".plan"):
        meta, _build = read_sidecar(artifact)
        io, platform, max_batch = engine_io(meta), "tensorrt_plan", 0
        if opts.kind != "gpu":
            raise ToolkitError(f"{artifact.name} is a TensorRT engine: it runs on a GPU only", fix="pass --kind gpu")
        _copy(artifact, version / "model.plan")
        log(f"  {artifact.name}: a static-batch engine, so max_batch_size 0 (no dynamic batching)")
    else:
        raise ToolkitError(f"cannot serve {artifact.name}", expected="a .onnx or .engine artifact")
    params = {"nonlocalnet": meta.to_json(), "artifact": artifact.name, "artifact_sha256": sha256_file(artifact),
              "role": "tile"}
    if platform == "python":
        params["ort_threads"] = str(opts.ort_threads)
    _write_text(out / name / "config.pbtxt", tile_config(name, meta, io, platform, opts, max_batch, params))
    tile_io = {"model": name, "input_name": io.input_name, "input_type": io.input_type,
               "output_name": io.output_name, "max_batch_size": max_batch}
    return tile_io, meta


def write_frame_model(tile_io: dict[str, Any], meta: ArtifactMeta, out: Path, opts: RepoOptions) -> str:
    name = f"{tile_io['model']}_frame"
    version = out / name / "1"
    _copy(HERE / "model_frame.py", version / "model.py")
    for file in RUNTIME_FILES:           # the toolkit's own tiler, so served frames tile like in-process ones
        _copy(HERE.parent / file, version / "runtime" / file)
    _write_text(out / name / "config.pbtxt", frame_config(name, tile_io, meta, opts))
    return name


def planned_models(artifacts: Sequence[str | Path], frame_model: bool) -> list[str]:
    """The model names a repository of ``artifacts`` will hold; unknown files and clashes are refused
    here, before anything is written."""
    names: list[str] = []
    for art in map(Path, artifacts):
        if not art.is_file():
            raise ToolkitError(f"artifact not found: {art}")
        if art.suffix.lower() not in (".onnx", ".engine", ".plan"):
            raise ToolkitError(f"cannot serve {art.name}", expected="a .onnx or .engine artifact")
        names += [model_name(art)] + ([f"{model_name(art)}_frame"] if frame_model else [])
    clashes = sorted({n for n in names if names.count(n) > 1})
    if clashes:
        raise ToolkitError("two artifacts map to the same Triton model name", found=", ".join(clashes),
                           fix="rename one of the artifacts")
    return names


def check_out(out: Path, replace: bool, fix: str) -> None:
    """``out`` must be new, an empty folder, or (with ``replace``) a folder to replace as a whole."""
    if out.exists() and not out.is_dir():
        raise ToolkitError(f"{out} exists and is not a folder", fix=fix)
    if out.is_dir() and any(out.iterdir()) and not replace:
        what = "a model repository" if (out / "repository.json").is_file() else "files"
        raise ToolkitError(f"{out} already holds {what}; a repository is written into a new folder", fix=fix)


def write_repository(artifacts: Sequence[str | Path], out: str | Path, opts: RepoOptions,
                     log: Callable[[str], None] = print, replace: bool = False,
                     check: Callable[[list[Path]], None] | None = None,
                     exists_fix: str = "choose a new output folder") -> list[dict[str, Any]]:
    """Write the repository; returns one entry per model (also saved as ``repository.json``).

    Atomic: the whole repository is built in a temporary folder beside ``out`` and renamed into place
    only once every model is written and ``check`` (given every config.pbtxt) passed; a failure or a
    SIGKILL leaves no servable part (the next run removes the temporary of a killed writer). An
    existing non-empty ``out`` is refused (``exists_fix`` says how to proceed) unless ``replace``:
    then the new repository replaces it as a whole, never old models beside new ones.
    """
    opts.check()
    out = Path(os.path.abspath(out))           # "." or "repo/" name the folder itself
    if not artifacts:
        raise ToolkitError("no artifacts given", fix="pass --artifacts A.onnx [B.engine ...]")
    planned_models(artifacts, opts.frame_model)
    check_out(out, replace, exists_fix)
    with temporary_dir(out) as tmp:
        entries = _write_models(artifacts, tmp, out, opts, log)
        _write_text(tmp / "repository.json", json.dumps({"models": entries}, indent=1) + "\n")
        if check is not None:
            check([tmp / e["model"] / "config.pbtxt" for e in entries])
        check_out(out, replace, exists_fix)         # (a folder that appeared meanwhile)
        install_dir(tmp, out)
    return entries


def _write_models(artifacts: Sequence[str | Path], tmp: Path, out: Path, opts: RepoOptions,
                  log: Callable[[str], None]) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    for art in map(Path, artifacts):
        tile_io, meta = write_tile_model(art, tmp, opts, log)
        name = tile_io["model"]
        entries.append({"model": name, "role": "tile", "artifact": str(art), "max_batch_size": tile_io["max_batch_size"],
                        "precision": meta.precision, "crop": list(meta.crop)})
        log(f"{out / name}: tile model, max_batch_size {tile_io['max_batch_size']}")
        if opts.frame_model:
            frame = write_frame_model(tile_io, meta, tmp, opts)
            entries.append({"model": frame, "role": "frame", "tile_model": name})
            log(f"{out / frame}: frame model (RGB frame in, label map out)")
    return entries
