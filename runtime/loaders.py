"""One way to make an ONNX Runtime session (Polygraphy-style loader; no torch, numpy not needed).

    session = SessionFromOnnx("model_int8_ort.onnx", threads=2, flush_denormals=True, spin=False)()
    session = session_from_onnx(model_proto, log_severity=3)          # the same, built at once

A loader holds the options (cheap to make, nothing loaded) and builds a configured
``onnxruntime.InferenceSession`` each time it is called. The options and what they set:

- ``providers``: the final provider list (names or ``(name, options)`` tuples); CPU by default.
  Short names ("cuda", "tensorrt") are expanded by the ONNX Runtime backend, which knows the artifact.
- ``threads``: ``intra_op_num_threads`` (None or 0: ONNX Runtime's default, one per core).
- ``optimization``: "all" (ONNX Runtime's default) | "extended" | "basic" | "disabled".
- ``flush_denormals``: ``session.set_denormal_as_zero`` on the session's own pool threads. The
  thread that calls ``run()`` is reached only once per process (see runtime/denormals.py), so run
  the session inside ``runtime.denormals.flush_denormals(loader.flush_denormals)`` as well.
- ``spin``: False sets ``session.intra_op.allow_spinning`` to 0 (idle threads sleep instead of
  busy-waiting); True leaves ONNX Runtime's default (spinning).
- ``profile``: a file prefix; turns on ONNX Runtime's profiler (``session.end_profiling()``).
- ``optimized_path``: where ONNX Runtime writes the graph it actually runs (after its fusions).
- ``disabled_optimizers``: graph passes to leave out (names unknown to this version are ignored).
- ``log_severity``: ``log_severity_level`` (0 verbose .. 4 fatal; None: ONNX Runtime's default).

A file that ONNX Runtime refuses becomes one :class:`ToolkitError` that says what it said and the
likely fix (:func:`explain_load_error`); an in-memory model (bytes or a ModelProto, made by the
toolkit itself) keeps ONNX Runtime's own exception: a failure there is a bug, with a traceback.

This file, errors.py and ``__init__.py`` are all it needs of the toolkit: runtime/triton/repo.py
copies them beside the Triton Python-backend tile model, which loads its ONNX file through it too.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Sequence

from runtime.errors import ToolkitError, require

OPTIMIZATION = {"all": "ORT_ENABLE_ALL", "extended": "ORT_ENABLE_EXTENDED", "basic": "ORT_ENABLE_BASIC",
                "disabled": "ORT_DISABLE_ALL"}
CPU = "CPUExecutionProvider"


def import_onnxruntime() -> Any:
    """``onnxruntime``, or a one-line ToolkitError saying how to install it."""
    return require("onnxruntime", "ONNX Runtime is not installed",
                   fix="pip install onnxruntime (CPU) or onnxruntime-gpu")


class SessionFromOnnx:
    """Builds an ``onnxruntime.InferenceSession`` from an ONNX file, serialized bytes or a ModelProto."""

    def __init__(self, model: Any, threads: int | None = None, providers: Sequence[Any] | None = None,
                 optimization: str = "all", flush_denormals: bool = False, spin: bool = True,
                 profile: str | None = None, optimized_path: str | os.PathLike | None = None,
                 disabled_optimizers: Sequence[str] = (), log_severity: int | None = None) -> None:
        if optimization not in OPTIMIZATION:
            raise ToolkitError(f"unknown ONNX Runtime optimization level {optimization!r}",
                               expected=" | ".join(OPTIMIZATION), found=repr(optimization))
        self.model = model
        self.threads = threads
        self.providers = list(providers) if providers is not None else [CPU]
        self.optimization = optimization
        self.flush_denormals = flush_denormals
        self.spin = spin
        self.profile = profile
        self.optimized_path = optimized_path
        self.disabled_optimizers = list(disabled_optimizers)
        self.log_severity = log_severity

    def session_options(self, ort: Any = None) -> Any:
        """The ``onnxruntime.SessionOptions`` these options make."""
        ort = ort or import_onnxruntime()
        opts = ort.SessionOptions()
        opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, OPTIMIZATION[self.optimization])
        if self.threads:
            opts.intra_op_num_threads = int(self.threads)
        if self.log_severity is not None:
            opts.log_severity_level = int(self.log_severity)
        if not self.spin:      # idle ORT threads otherwise busy-wait and starve other threads and processes
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if self.flush_denormals:   # r50os8 FP32 on CPU: 8.3 s -> 4.9 s per 512x1024 crop
            opts.add_session_config_entry("session.set_denormal_as_zero", "1")
        if self.profile:
            opts.enable_profiling = True
            opts.profile_file_prefix = str(self.profile)
        if self.optimized_path:
            opts.optimized_model_filepath = str(self.optimized_path)
        return opts

    def __call__(self) -> Any:
        ort = import_onnxruntime()
        source, path = self._source()
        extra = {"disabled_optimizers": self.disabled_optimizers} if self.disabled_optimizers else {}
        opts = self.session_options(ort)
        try:
            return ort.InferenceSession(source, sess_options=opts, providers=self.providers, **extra)
        except Exception as exc:  # ORT raises its own pybind exception types (InvalidProtobuf, Fail, ...)
            if path is None:      # the toolkit's own in-memory model: a bug, keep ORT's exception
                raise
            raise explain_load_error(path, str(exc) or type(exc).__name__) from None

    def _source(self) -> tuple[Any, Path | None]:
        """(what InferenceSession takes, the file's path or None for an in-memory model)."""
        if isinstance(self.model, (bytes, bytearray)):
            return bytes(self.model), None
        if hasattr(self.model, "SerializeToString"):            # onnx.ModelProto
            return self.model.SerializeToString(), None
        path = onnx_file(self.model)
        return str(path), path


def onnx_file(path: str | os.PathLike) -> Path:
    """``path`` as a Path, or the one-line error for an ONNX file that is not there."""
    path = Path(path)
    if not path.is_file():
        raise ToolkitError(f"ONNX file not found: {path}", fix="check the path or export it first")
    return path


def session_from_onnx(model: Any, **options: Any) -> Any:
    """``SessionFromOnnx(model, **options)()``: the session, built at once."""
    return SessionFromOnnx(model, **options)()


def explain_load_error(path: Path, text: str) -> ToolkitError:
    """The ToolkitError for an ``InferenceSession`` that refused ``path``: say what ORT said."""
    first = text.strip().splitlines()[0][:300] if text.strip() else "no message"
    ir = re.search(r"IR version:? (\d+), max supported IR version:? (\d+)", text)
    if ir:
        return ToolkitError(f"ONNX Runtime cannot load {path}: the file has IR version {ir.group(1)}, this "
                            f"ONNX Runtime reads at most {ir.group(2)}", found=first,
                            fix="re-export it with this toolkit (it writes the lowest IR version the opset "
                                "allows) or upgrade onnxruntime")
    domain = re.search(r"Opset (\d+) is under development.*domain (\S+) is till opset (\d+)", text, re.DOTALL)
    if domain:
        version, name, limit = domain.groups()
        return ToolkitError(f"ONNX Runtime cannot load {path}: the file declares domain {name} opset {version}, "
                            f"this ONNX Runtime supports it up to opset {limit}", found=first,
                            fix="re-export it with this toolkit (it declares only the domains its nodes use) "
                                "or upgrade onnxruntime")
    if re.search(r"opset|domain", text, re.IGNORECASE) and not re.search(r"protobuf", text, re.IGNORECASE):
        return ToolkitError(f"ONNX Runtime cannot load {path}: it refuses an opset or domain the file declares",
                            found=first, fix="re-export it with this toolkit (opset 17, only the domains its "
                                             "nodes use) or upgrade onnxruntime")
    if re.search(r"protobuf|truncat|corrupt", text, re.IGNORECASE):
        return ToolkitError(f"ONNX Runtime cannot load {path}: not a readable ONNX file", found=first,
                            fix="re-export the artifact; the file may be truncated or corrupt")
    return ToolkitError(f"ONNX Runtime cannot load {path}", found=first,
                        fix="check the onnxruntime version (pip show onnxruntime) against the README")
