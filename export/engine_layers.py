"""Which layers of a built TensorRT engine run INT8: the field check of the fusion model, on the target.

The command is ``python -m export.layer_report ENGINE [--onnx SOURCE.onnx] [--json OUT]``
(apps/layer_report.py).

Reads the engine's layer information with TensorRT's engine inspector (built with
``ProfilingVerbosity.DETAILED``, as export/to_trt.py does; or ENGINE is the JSON of ``trtexec
--profilingVerbosity=detailed --exportLayerInfo``) and prints each layer's input, output and weight
precision with a verdict, flagging quantized layers that did not run INT8 and stray standalone
Cast / Quantize / Dequantize / precision-changing Reformat layers. The layers expected INT8 are the
ONNX nodes :func:`calibration.fusion.check_fusion` passes in the source ONNX (``--onnx``, else the
sidecar's ``build.onnx`` beside the engine); without it, every convolution outside the metadata's
kept-float nodes. Expected conversions are said so: the network input's quantization (and a float
cast before it), the output cast, float Casts next to a layer kept float on purpose. Exit 0: nothing
flagged; 1: something flagged; 2 and one ``error:`` line: bad input.

JSON keys as NVIDIA's trt-engine-explorer reads the inspector's output (TensorRT OSS
tools/experimental/trt-engine-explorer/trex: parser.py, layer.py, activations.py, lint.py):
``{"Layers": [...], "Bindings": [...]}`` (bare names without detailed verbosity); per layer ``Name``
(fused ONNX names joined by " + "), ``LayerType`` (kernel), ``ParameterType`` (Convolution, Reformat,
Scale, ...), a Reformat's ``Origin`` (REFORMAT | QDQ), ``Inputs`` / ``Outputs`` with ``Format/Datatype``
("Row major linear FP32", "Thirty-two wide channel vectorized row major Int8 format", "Half"),
``Weights`` / ``ConvWeights`` ``{"Type"}``, ``Metadata``: "[ONNX Layer: NAME | ...]" entries
(onnx-tensorrt's processMetadata) joined by \\x1e (8.6) or \\x1f (10+). An unfused Q/DQ is a Scale
layer with INT8 on one side only (trex lint.py). Checked against the real bindings of TensorRT 8.6.1,
10.3, 10.16 and 11.4 (tests/trt_bindings/); not yet run on a real engine in this project.
"""
from __future__ import annotations

import importlib.util
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from runtime.errors import ToolkitError

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
CONVERSION_KINDS = ("reformat", "scale", "cast", "quantize", "dequantize")
LAYOUT_KINDS = ("reformat", "noop")
_WORDS = {"int8": "INT8", "uint8": "UINT8", "fp16": "FP16", "half": "FP16", "fp32": "FP32", "float": "FP32",
          "bfloat16": "BF16", "int32": "INT32", "int64": "INT64", "bool": "BOOL", "fp8": "FP8", "double": "FP64"}
_META_ENTRY = re.compile(r"\[ONNX Layer: ([^\]]*)\]")
_NAME_PARTS = re.compile(r"\s+\+\s+|\s+\|\|\s+|PWN\(|\)|,\s*")
NOT_DETAILED = ("the engine was built without detailed profiling verbosity: TensorRT kept the layer names "
                "only, not their precisions")
REBUILD = ("rebuild it with this toolkit's export/to_trt.py, which sets ProfilingVerbosity.DETAILED (delete the "
           "old .engine first: an unchanged build is reused); trtexec: --profilingVerbosity=detailed")


def tensor_precision(desc: Any) -> str:
    """``"Channel major FP16 format where channel % 8 == 0"`` -> ``"FP16"``; "?" when none is named."""
    for word in re.findall(r"[a-z0-9]+", str(desc or "").lower()):
        if word in _WORDS:
            return _WORDS[word]
    return "?"


@dataclass(frozen=True)
class EngineLayer:
    """One layer of the engine's layer information."""

    name: str
    kind: str                          # ParameterType, else LayerType
    inputs: tuple[tuple[str, str], ...]     # (tensor name, precision)
    outputs: tuple[tuple[str, str], ...]
    weights: str = ""                  # precision of the weights, "" when the layer has none
    onnx_nodes: tuple[str, ...] = ()
    subtype: str = ""                  # LayerType (the kernel kind)
    origin: str = ""                   # Reformat: REFORMAT | QDQ

    @property
    def in_precision(self) -> str:
        return self.inputs[0][1] if self.inputs else "-"

    @property
    def out_precision(self) -> str:
        return self.outputs[0][1] if self.outputs else "-"

    @property
    def runs_int8(self) -> bool:
        return self.in_precision == "INT8" and self.weights in ("", "INT8")

    @property
    def is_convolution(self) -> bool:
        return "conv" in (self.kind + self.subtype).lower()


def onnx_nodes(raw: dict) -> tuple[str, ...]:
    """The ONNX nodes a layer was built from: its Metadata entries, else the parts of its fused name."""
    found = [m.split(" | ")[0].strip() for m in _META_ENTRY.findall(str(raw.get("Metadata") or ""))]
    if not found:
        found = [p.strip() for p in _NAME_PARTS.split(str(raw.get("Name", ""))) if p.strip()]
    return tuple(dict.fromkeys(found))


def _tensors(items: Any) -> tuple[tuple[str, str], ...]:
    return tuple((str(t.get("Name", "")), tensor_precision(t.get("Format/Datatype"))) for t in items or ())


def parse_layers(text: str) -> tuple[list[EngineLayer], list[str]]:
    """(layers, binding names) of the inspector's JSON; ToolkitError for names-only information."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ToolkitError("the engine's layer information is not JSON", found=str(exc)[:80]) from None
    raw_layers = data.get("Layers") if isinstance(data, dict) else None
    if not isinstance(raw_layers, list):
        raise ToolkitError("not TensorRT layer information", expected='a JSON object with "Layers"')
    if not raw_layers or not all(isinstance(r, dict) for r in raw_layers):
        raise ToolkitError(NOT_DETAILED, fix=REBUILD)
    layers = []
    for raw in raw_layers:
        weights = raw.get("Weights") or raw.get("ConvWeights") or {}
        layers.append(EngineLayer(
            name=str(raw.get("Name", "?")), kind=str(raw.get("ParameterType") or raw.get("LayerType") or "?"),
            inputs=_tensors(raw.get("Inputs")), outputs=_tensors(raw.get("Outputs")),
            weights=tensor_precision(weights.get("Type")) if isinstance(weights, dict) and weights else "",
            onnx_nodes=onnx_nodes(raw), subtype=str(raw.get("LayerType", "")), origin=str(raw.get("Origin", ""))))
    return layers, [str(b) for b in data.get("Bindings") or ()]


@dataclass(frozen=True)
class Expectation:
    """Which layers should run INT8 and which are float on purpose."""

    int8: tuple[str, ...] = ()         # ONNX nodes the fusion check says run INT8
    kept: frozenset = frozenset()      # ONNX nodes kept float on purpose
    op_types: dict = field(default_factory=dict, hash=False, compare=False)   # ONNX node -> op type
    source: str = ""                   # where the expectation comes from (printed)
    by_convolution: bool = False       # no ONNX: every convolution outside ``kept``


def conversion_role(lay: EngineLayer, op_types: dict) -> str:
    """The role of a standalone conversion layer (``Quantize``, ``Dequantize``, ``Cast A->B``,
    ``Reformat A->B``), or "" for any other layer."""
    ops = {op_types.get(n) for n in lay.onnx_nodes}
    from_onnx = bool(ops) and ops <= {"Cast", *QDQ_OPS}
    if not (from_onnx or lay.kind.lower() in CONVERSION_KINDS or lay.origin in ("QDQ", "CAST")):
        return ""
    a, b = lay.in_precision, lay.out_precision
    if a == b or "-" in (a, b):
        return ""
    if b == "INT8":
        return "Quantize"
    if a == "INT8":
        return "Dequantize"
    cast = ops == {"Cast"} or lay.kind.lower() == "cast" or lay.origin == "CAST"
    return f"{'Cast' if cast else 'Reformat'} {a}->{b}"


class _Net:
    """Producers and consumers of the engine's tensors, to say which conversions are expected."""

    def __init__(self, layers: list[EngineLayer], bindings: list[str], expect: Expectation) -> None:
        self.layers, self.bindings, self.kept = layers, set(bindings), expect.kept
        self.roles = [conversion_role(lay, expect.op_types) for lay in layers]
        self.writer: dict[str, int] = {}
        self.readers: dict[str, list[int]] = {}
        for i, lay in enumerate(layers):
            for name, _ in lay.outputs:
                self.writer.setdefault(name, i)
            for name, _ in lay.inputs:
                self.readers.setdefault(name, []).append(i)

    def _through(self, i: int) -> bool:
        """Layers a conversion chain may pass: layout reformats, no-ops and float casts (not Q/DQ)."""
        role, kind = self.roles[i], self.layers[i].kind.lower()
        return (not role and kind in LAYOUT_KINDS) or role.startswith(("Cast", "Reformat"))

    def _upstream(self, i: int) -> list[int]:
        return [self.writer[t] for t, _ in self.layers[i].inputs if t in self.writer]

    def _downstream(self, i: int) -> list[int]:
        return [j for t, _ in self.layers[i].outputs for j in self.readers.get(t, [])]

    def from_input(self, i: int, seen: frozenset = frozenset()) -> bool:
        for t, _ in self.layers[i].inputs:
            if t not in self.writer and (t in self.bindings or not self.bindings):
                return True
        return any(j not in seen and self._through(j) and self.from_input(j, seen | {i}) for j in self._upstream(i))

    def to_output(self, i: int, seen: frozenset = frozenset()) -> bool:
        for t, _ in self.layers[i].outputs:
            if t in self.bindings or (not self.bindings and t not in self.readers):
                return True
        return any(j not in seen and self._through(j) and self.to_output(j, seen | {i}) for j in self._downstream(i))

    def kept_neighbour(self, i: int) -> str:
        for j in self._upstream(i) + self._downstream(i):
            hit = [n for n in self.layers[j].onnx_nodes if n in self.kept]
            if hit:
                return hit[0]
        return ""

    def expected(self, i: int) -> str:
        """Why conversion layer ``i`` belongs there, or "" (a stray)."""
        role = self.roles[i]
        if self.from_input(i):
            return "the network input's " + ("quantization" if role == "Quantize" else "conversion")
        if self.to_output(i):
            return "the output's " + ("dequantization" if role == "Dequantize" else "cast")
        near = "" if role in ("Quantize", "Dequantize") else self.kept_neighbour(i)
        return f"next to {near}, kept float on purpose" if near else ""


@dataclass(frozen=True)
class Row:
    layer: str
    type: str
    inputs: str
    outputs: str
    weights: str
    verdict: str
    flagged: bool


@dataclass
class LayerReport:
    rows: list[Row]
    quantized: int                     # layers expected INT8
    int8: int                          # of those, running INT8
    stray: int                         # stray conversion layers
    missing: list[str] = field(default_factory=list)    # expected INT8, not found in the engine
    notes: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 1 if self.missing or any(r.flagged for r in self.rows) else 0

    def summary(self) -> str:
        text = f"{self.int8} of {self.quantized} quantized layers run INT8; {self.stray} stray Cast/DQ layers"
        return text + (f"; {len(self.missing)} expected INT8 but not found in the engine" if self.missing else "")

    def to_dict(self) -> dict[str, Any]:
        return {"summary": self.summary(), "exit_code": self.exit_code, "quantized": self.quantized,
                "int8": self.int8, "stray": self.stray, "missing": self.missing, "notes": self.notes,
                "rows": [asdict(r) for r in self.rows]}


def _targets(layers: list[EngineLayer], expect: Expectation) -> dict[str, list[int]]:
    """Each layer expected INT8 (an ONNX node, or a convolution by name) -> the engine layers holding it."""
    if expect.by_convolution:
        return {lay.name: [i] for i, lay in enumerate(layers)
                if lay.is_convolution and not set(lay.onnx_nodes) & expect.kept}
    return {node: [i for i, lay in enumerate(layers) if node in lay.onnx_nodes] for node in expect.int8}


def _verdict(net: _Net, i: int, wanted: list[str]) -> tuple[str, bool]:
    lay, role = net.layers[i], net.roles[i]
    if wanted:
        if lay.runs_int8:
            return "INT8" + (f" ({len(wanted)} quantized layers fused)" if len(wanted) > 1 else ""), False
        weights = f", weights {lay.weights}" if lay.weights else ""
        return f"NOT INT8: expected INT8, runs {lay.in_precision}{weights}", True
    if role:
        why = net.expected(i)
        return (f"{role}: expected, {why}", False) if why else (f"STRAY {role}", True)
    if lay.kind.lower() == "reformat":
        return "layout reformat", False
    if set(lay.onnx_nodes) & net.kept:
        return "float, kept on purpose", False
    return "", False


def _joined(tensors: tuple[tuple[str, str], ...]) -> str:
    return ",".join(dict.fromkeys(p for _, p in tensors)) or "-"


def build_report(text: str, expect: Expectation) -> LayerReport:
    """The report for the inspector's JSON ``text`` (pure: no TensorRT, no files)."""
    layers, bindings = parse_layers(text)
    net = _Net(layers, bindings, expect)
    targets = _targets(layers, expect)
    wanted: dict[int, list[str]] = {}
    for label, idx in targets.items():
        for i in idx:
            wanted.setdefault(i, []).append(label)
    rows = []
    for i, lay in enumerate(layers):
        verdict, flagged = _verdict(net, i, wanted.get(i, []))
        rows.append(Row(lay.name, lay.kind, _joined(lay.inputs), _joined(lay.outputs), lay.weights or "-",
                        verdict, flagged))
    int8 = sum(1 for idx in targets.values() if idx and all(layers[i].runs_int8 for i in idx))
    stray = sum(1 for r in rows if r.verdict.startswith("STRAY"))
    expected = [f"{r.layer} ({r.verdict.split('expected, ')[1]})" for r in rows if ": expected, " in r.verdict]
    notes = [expect.source] if expect.source else []
    notes += ["expected conversions: " + "; ".join(expected)] if expected else []
    return LayerReport(rows, len(targets), int8, stray, [k for k, idx in targets.items() if not idx], notes)


def _short(name: str, width: int) -> str:
    return name if len(name) <= width else name[:width // 2 - 1] + "..." + name[-(width - width // 2 - 2):]


def format_report(report: LayerReport, width: int = 56) -> str:
    """The table (layer, type, input / output / weight precision, verdict), notes and the summary line."""
    head = ("layer", "type", "in", "out", "weights", "verdict")
    cells = [head] + [(_short(r.layer, width), r.type, r.inputs, r.outputs, r.weights, r.verdict) for r in report.rows]
    sizes = [max(len(c[k]) for c in cells) for k in range(len(head) - 1)]
    lines = ["  ".join(c[k].ljust(sizes[k]) for k in range(len(sizes))) + "  " + c[-1] for c in cells]
    if report.missing:
        lines.append("expected INT8 but in no engine layer (matched by Metadata / layer names): "
                     + ", ".join(report.missing))
    return "\n".join(lines + report.notes + [report.summary()])


# -- where the expectation comes from -------------------------------------------------------------
def _kept(meta: Any) -> frozenset:
    extra = getattr(meta, "extra", None) or {}
    return frozenset(extra.get("kept_float_nodes") or ()) | frozenset(extra.get("kept_fp32_nodes") or ())


def expectation_from_onnx(model: Any, meta: Any, name: str) -> Expectation:
    """The layers :func:`calibration.fusion.check_fusion` says TensorRT runs INT8 in ``model``."""
    from calibration.fusion import check_fusion

    kept = _kept(meta)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    layout = getattr(meta, "layout", "")
    target = "strong" if layout == "trt+fp16" or (layout != "trt" and opset >= 19) else "weak"
    fusion = check_fusion(model, target, kept)
    nodes = tuple(v.node for v in fusion.verdicts if v.int8)
    words = "TensorRT 10/11 strongly typed" if target == "strong" else "TensorRT 8.x flags"
    source = (f"expected INT8: the {len(nodes)} layers the fusion check ({words}) says {name} runs INT8"
              + (f"; it predicts {len(fusion.failures)} will not" if fusion.failures else ""))
    return Expectation(nodes, kept, {n.name: n.op_type for n in model.graph.node}, source)


def _by_convolution(meta: Any, why: str) -> Expectation:
    if meta is not None and meta.precision != "int8":
        return Expectation(kept=_kept(meta), source=f"a {meta.precision} engine: nothing is expected INT8")
    return Expectation(kept=_kept(meta), by_convolution=True,
                       source=f"{why}: every convolution is expected INT8 except the metadata's kept-float nodes")


def _read_onnx(path: Path, meta: Any) -> tuple[Any, Any]:
    """(model, metadata: the file's own, else the sidecar's) of an ONNX file."""
    import onnx
    from google.protobuf.message import DecodeError

    from runtime.artifact import read_onnx_meta

    try:
        model = onnx.load(str(path))
    except DecodeError:
        raise ToolkitError(f"{path} is not an ONNX model", fix="pass the ONNX the engine was built from") from None
    try:
        meta = read_onnx_meta(path)
    except ToolkitError:
        pass
    return model, meta


def load_expectation(engine: Path, onnx_path: Path | None, meta: Any, build: dict) -> Expectation:
    """From ``--onnx``, else the sidecar's source ONNX beside the engine, else by convolution."""
    explicit = onnx_path is not None
    if onnx_path is None and build.get("onnx"):
        onnx_path = engine.parent / str(build["onnx"])
        if not onnx_path.is_file():
            return _by_convolution(meta, f"the source ONNX {onnx_path.name} is not beside the engine (pass --onnx)")
    if onnx_path is None:
        return _by_convolution(meta, "no source ONNX (pass --onnx)")
    if not onnx_path.is_file():
        raise ToolkitError(f"ONNX file not found: {onnx_path}", fix="pass the ONNX the engine was built from")
    if importlib.util.find_spec("onnx") is None:
        if explicit:
            raise ToolkitError("--onnx needs the onnx package", fix="pip install onnx")
        return _by_convolution(meta, "the onnx package is not installed here (pip install onnx)")
    model, meta = _read_onnx(onnx_path, meta)
    return expectation_from_onnx(model, meta, onnx_path.name)


# -- the engine -----------------------------------------------------------------------------------
def input_kind(path: Path) -> str:
    """``engine``, or ``layer-info`` (trtexec's --exportLayerInfo JSON); ToolkitError for anything else."""
    if not path.is_file():
        raise ToolkitError(f"engine file not found: {path}", fix="pass the .engine export/to_trt.py wrote")
    with open(path, "rb") as f:
        head = f.read(4096)
    if not head:
        raise ToolkitError(f"{path} is empty, not a TensorRT engine", fix="rebuild it with export/to_trt.py")
    if path.suffix.lower() == ".onnx":
        raise ToolkitError(f"{path.name} is an ONNX model, not a TensorRT engine",
                           fix="pass the engine built from it (and this file as --onnx)")
    if b"\0" not in head:
        try:
            head.decode("utf-8")
            text = True
        except UnicodeDecodeError as exc:
            text = exc.start >= len(head) - 3          # a character cut at the end of the block
        if text:
            if head.lstrip().startswith(b"{") and '"Layers"' in path.read_text(errors="replace"):
                return "layer-info"
            raise ToolkitError(f"{path} is a text file, not a serialized TensorRT engine",
                               fix="pass the .engine (not its .json sidecar) or trtexec's --exportLayerInfo JSON")
    return "engine"


def read_engine_information(engine: Path, built_with: str = "") -> str:
    """The engine's layer information (JSON) from TensorRT's engine inspector. Needs TensorRT and
    the GPU the engine was built for: the engine is deserialized, not run."""
    from export.trt_builder import INSTALL_HINT, import_tensorrt, make_logger

    try:
        trt = import_tensorrt()
    except ToolkitError:
        raise ToolkitError("TensorRT is not installed here; this command runs on the target the engine was "
                           "built on (e.g. a Jetson)", fix=INSTALL_HINT.split(", or use")[0]
                           + "; on a Jetson: JetPack's python3-libnvinfer") from None
    if built_with and built_with != trt.__version__:
        raise ToolkitError(f"{engine.name} was built with TensorRT {built_with}, this is {trt.__version__}",
                           fix="run the report where it was built, or rebuild it here with export/to_trt.py")
    logger = make_logger(trt)
    trt_runtime = trt.Runtime(logger)
    trt_engine = trt_runtime.deserialize_cuda_engine(engine.read_bytes())
    if trt_engine is None:
        log = " | ".join(m for m in logger.messages if "ERROR" in m)[-300:]
        raise ToolkitError(f"TensorRT {trt.__version__} cannot load {engine}: not a TensorRT engine, or one "
                           "built by another TensorRT version or for another GPU" + (f" ({log})" if log else ""),
                           fix="rebuild it on this device with export/to_trt.py")
    if hasattr(trt_engine, "profiling_verbosity") and trt_engine.profiling_verbosity != trt.ProfilingVerbosity.DETAILED:
        raise ToolkitError(NOT_DETAILED, fix=REBUILD)
    inspector = trt_engine.create_engine_inspector()
    return str(inspector.get_engine_information(trt.LayerInformationFormat.JSON))


def _sidecar(engine: Path) -> tuple[Any, dict, list[str]]:
    from runtime.artifact import read_sidecar, sidecar_path

    if not sidecar_path(engine).is_file():
        return None, {}, [f"no sidecar {sidecar_path(engine).name}: no metadata"]
    try:
        meta, build = read_sidecar(engine)
    except (ToolkitError, ValueError, KeyError) as exc:
        return None, {}, [f"sidecar {sidecar_path(engine).name} unreadable ({exc})"]
    return meta, build, []


def report_for(path: Path, onnx_path: Path | None = None) -> LayerReport:
    """The layer report of an engine (read with TensorRT) or of trtexec's layer-information JSON."""
    if input_kind(path) == "layer-info":
        meta, build, notes = None, {}, []
        text = path.read_text()
    else:
        meta, build, notes = _sidecar(path)
        text = read_engine_information(path, str(build.get("tensorrt_version") or ""))
    report = build_report(text, load_expectation(path, onnx_path, meta, build))
    report.notes[:0] = notes
    return report
