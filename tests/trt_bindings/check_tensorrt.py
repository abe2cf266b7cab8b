"""Run the project's TensorRT code against the real ``tensorrt`` module importable in this process.

Started by tests/test_trt_bindings.py (and ``python -m tests.trt_bindings``) in a subprocess whose
PYTHONPATH / LD_LIBRARY_PATH point at one bindings wheel and the stub libraries (prepare.py).
Prints one JSON report on its last stdout line; the pytest side asserts on it.
"""
from __future__ import annotations

import ast
import contextlib
import json
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterator

import numpy as np

REPO = Path(__file__).resolve().parents[2]
TRT_FILES = ("export/trt_builder.py", "export/engines.py", "calibration/trt_calibrator.py",
             "runtime/backends/tensorrt_backend.py", "export/engine_layers.py")
# receiver expression in the project's code -> the TensorRT class it holds
RECEIVERS = {"builder": "Builder", "config": "IBuilderConfig", "network": "INetworkDefinition",
             "parser": "OnnxParser", "layer": "ILayer", "err": "ParserError", "self._engine": "ICudaEngine",
             "self._context": "IExecutionContext", "self._runtime": "Runtime",
             "ndf": "NetworkDefinitionCreationFlag", "bf": "BuilderFlag", "trt_runtime": "Runtime",
             "trt_engine": "ICudaEngine", "inspector": "EngineInspector"}
ROUTES = (("fp32", "fp32", {}), ("fp16", "fp16", {}), ("int8-trt", "int8", {"layout": "trt"}),
          ("int8-fp16", "int8", {"layout": "trt+fp16"}), ("implicit", "int8", {"implicit": True}))
KEEP = ["/nl_block/MatMul", "/nl_block/Softmax", "/ArgMax", "/Cast"]
LAYERS = [("/nl_block/MatMul", "MATRIX_MULTIPLY", ["FLOAT"]),
          ("/nl_block/MatMul_1", "MATRIX_MULTIPLY", ["FLOAT"]),
          ("/nl_block/MatMul_1_output_0__to_fp16_cast", "CAST", ["HALF"]),
          ("/nl_block/Softmax", "SOFTMAX", ["FLOAT"]),
          ("/ArgMax", "TOPK", ["FLOAT", "INT32"]),
          ("/Cast", "CAST", ["INT32"])]


def _info_layer(name: str, kind: str, ins: list, outs: list, nodes: tuple = (), **extra: Any) -> dict:
    tensors = lambda pairs: [{"Name": t, "Location": "Device", "Dimensions": [1, 64, 8, 16], "Format/Datatype": f}
                             for t, f in pairs]
    meta = {"Metadata": "\x1f".join(f"[ONNX Layer: {n}]" for n in nodes)} if nodes else {}
    return {"Name": name, "LayerType": extra.pop("LayerType", kind), "Inputs": tensors(ins),
            "Outputs": tensors(outs), "ParameterType": kind, **meta, **extra}


I8, F32, F16 = ("Thirty-two wide channel vectorized row major Int8 format", "Row major linear FP32",
                "Row major linear FP16 format")
# the inspector's JSON of a detailed INT8 engine: input quantize, a fused INT8 conv, a stray Dequantize in
# front of a conv left FP32, the affinity kept float, the output cast
LAYER_INFO = {"Layers": [
    _info_layer("/input/QuantizeLinear", "Reformat", [("input", F32)], [("xq", I8)], ("/input/QuantizeLinear",),
                Origin="QDQ"),
    _info_layer("/conv1/Conv + /relu1/Relu", "Convolution", [("xq", I8)], [("r1", I8)], ("/conv1/Conv", "/relu1/Relu"),
                LayerType="CaskConvolution", Weights={"Type": "Int8", "Count": 1728}),
    _info_layer("/conv2/DequantizeLinear", "Scale", [("r1", I8)], [("d2", F32)], ("/conv2/DequantizeLinear",)),
    _info_layer("/conv2/Conv", "Convolution", [("d2", F32)], [("c2", F32)], ("/conv2/Conv",),
                LayerType="CaskConvolution", Weights={"Type": "Float", "Count": 36864}),
    _info_layer("/nl/MatMul", "MatrixMultiply", [("c2", F32), ("c2", F32)], [("a", F32)], ("/nl/MatMul",)),
    _info_layer("/out/Cast", "Reformat", [("a", F32)], [("output", F16)], ("/out/Cast",))],
    "Bindings": ["input", "output"]}


class FakeCalibSet:
    """The calibration-set interface the calibrator reads (len, crop, batches)."""

    crop = (8, 16)

    def __len__(self) -> int:
        return 3

    def batches(self, batch: int) -> Iterator[np.ndarray]:
        for i in range(0, 3, batch):
            yield np.full((batch, 3) + self.crop, float(i), np.float32)


class HostMemory:
    """runtime.backends.cuda_mem's provider interface over host memory (device pointers are ints)."""

    kind = "host"

    def __init__(self) -> None:
        self.buffers: dict[int, np.ndarray] = {}
        self.freed: list[int] = []
        self.streams = 0
        self.active = 0

    @contextlib.contextmanager
    def activate(self) -> Iterator[None]:
        self.active += 1
        yield

    def malloc(self, nbytes: int) -> int:
        buf = np.zeros(nbytes, np.uint8)
        self.buffers[buf.ctypes.data] = buf
        return buf.ctypes.data

    def device_ptr(self, mem: int) -> int:
        return int(mem)

    def stream(self) -> str:
        self.streams += 1
        return "stream"

    def htod_async(self, dst: int, src: np.ndarray, stream: Any) -> None:
        self.buffers[dst][:src.nbytes] = src.view(np.uint8).ravel()

    def synchronize(self, stream: Any) -> None:
        pass

    def free(self, mem: int) -> None:
        self.freed.append(mem)

    def destroy_stream(self, stream: Any) -> None:
        self.streams -= 1


class HostCuda(HostMemory):
    """HostMemory plus what the TensorRT backend uses; records the threads that activated it."""

    supports_graphs = False

    def __init__(self) -> None:
        super().__init__()
        self.threads: list[str] = []
        self.device = None

    def device_properties(self, device: int = 0) -> tuple[str, tuple[int, int]]:
        return "Host", (8, 7)

    def use_device(self, device: int) -> None:
        self.device = device

    @contextlib.contextmanager
    def activate(self) -> Iterator[None]:
        import threading
        self.threads.append(threading.current_thread().name)
        yield

    def pinned(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        return np.zeros(shape, dtype)

    def free_pinned(self, arr: np.ndarray) -> None:
        pass

    def stream_handle(self, stream: Any) -> int:
        return 7

    def dtoh_async(self, dst: np.ndarray, src: int, stream: Any) -> None:
        dst.view(np.uint8).ravel()[:] = self.buffers[src][:dst.nbytes]


def _run(fn: Any) -> dict[str, Any]:
    from runtime.errors import ToolkitError

    try:
        return {"ok": fn()}
    except ToolkitError as exc:
        return {"error": str(exc)}


def check_routes(trt: Any, tmp: Path) -> dict[str, Any]:
    """Every plan_build route, then the builder code with it (stand-in builder, real enums)."""
    import export.trt_builder as tb
    from tests.trt_bindings.gpu_free import install

    feat = tb.Features.detect(trt)
    out: dict[str, Any] = {}
    for name, precision, kw in ROUTES:
        try:
            plan = tb.plan_build(feat, precision, keep_fp32=KEEP, **kw)
        except tb.ToolkitError as exc:
            out[name] = {"refused": str(exc)}
            continue
        calls = install(trt, LAYERS)
        mem = HostMemory()
        if kw.get("implicit"):
            from calibration.trt_calibrator import make_entropy_calibrator
            plan.calibrator = make_entropy_calibrator(trt, FakeCalibSet(), 1, tmp / "calib.cache", cuda=mem)
        result = tb.build_engine(tmp / "m.onnx", plan, 1.0, None, progress=lambda *a: None)
        out[name] = {"onnx_role": plan.onnx_role, "strongly_typed": result.strongly_typed,
                     "network_flags": calls["network_flags"], "builder_flags": calls["flags"],
                     "pinned": calls["pinned"], "output_types": calls["output_types"],
                     "workspace": calls["workspace"], "calibrator_set": "calibrator" in calls,
                     "profiling_verbosity": calls.get("profiling_verbosity"),
                     "calibrator_freed": len(mem.freed), "streams_left": mem.streams}
    return out


def check_timing_cache(trt: Any, tmp: Path) -> dict[str, Any]:
    import export.trt_builder as tb
    from tests.trt_bindings.gpu_free import install

    keyed = tb.timing_cache_file(tmp / "timing.cache", trt.__version__, ("NVIDIA Jetson AGX Orin", (8, 7)))
    out: dict[str, Any] = {"keyed_name": keyed.name}
    plan = tb.plan_build(tb.Features.detect(trt), "fp32")
    for accepted in (True, False):
        keyed.write_bytes(b"cache-from-elsewhere")
        calls = install(trt, cache_ok=accepted)
        log: list[str] = []
        tb.build_engine(tmp / "m.onnx", plan, 1.0, keyed, progress=log.append)
        out["accepted" if accepted else "rejected"] = {
            "set_calls": [[d.decode(), ok] for d, ok in calls["timing_cache"]],
            "reported": [m for m in log if "timing cache" in m], "file_after": keyed.read_bytes().decode()}
    return out


def check_calibrator(trt: Any, tmp: Path) -> dict[str, Any]:
    from calibration.trt_calibrator import make_entropy_calibrator

    mem = HostMemory()
    cache = tmp / "sub" / "entropy.cache"
    cache.parent.mkdir()
    made = _run(lambda: make_entropy_calibrator(trt, FakeCalibSet(), 2, cache, cuda=mem))
    if "error" in made:
        return made
    cal = made["ok"]
    first = cal.get_batch(["input"])
    data = mem.buffers[first[0]][:2 * 3 * 8 * 16 * 4].view(np.float32).copy()
    second, third = cal.get_batch(["input"]), cal.get_batch(["input"])
    before = cal.read_calibration_cache()
    cal.write_calibration_cache(b"TRT-8601-EntropyCalibration2")
    after = cal.read_calibration_cache()
    cal.release()
    cal.release()
    return {"is_subclass": isinstance(cal, trt.IInt8EntropyCalibrator2), "batch_size": cal.get_batch_size(),
            "first_ptr_is_int": isinstance(first[0], int) and len(first) == 1, "first_values": sorted(set(data.tolist())),
            "second": second is not None, "third": third, "cache_before": before,
            "cache_after": after.decode() if after else None, "freed": len(mem.freed), "streams_left": mem.streams,
            "leftover_files": sorted(p.name for p in cache.parent.iterdir())}


def check_errors(trt: Any, tmp: Path) -> dict[str, Any]:
    import export.trt_builder as tb
    from tests.trt_bindings.gpu_free import install

    logger = tb.make_logger(trt)
    logger.log(trt.ILogger.Severity.WARNING, "a warning")
    out: dict[str, Any] = {"logger_is_ilogger": isinstance(logger, trt.ILogger), "logger_messages": logger.messages}
    install(trt, parse_ok=False)
    out["parser"] = _run(lambda: tb.build_engine(tmp / "m.onnx", tb.BuildPlan("fp32", False), progress=lambda *a: None))
    install(trt, build_ok=False)
    out["build"] = _run(lambda: tb.build_engine(tmp / "m.onnx", tb.BuildPlan("fp32", False), progress=lambda *a: None))
    install(trt, LAYERS)
    net = trt.Builder(tb.make_logger(trt)).create_network(0)
    out["pin_direct"] = _run(lambda: tb.pin_layers_fp32(trt, net, KEEP))
    return out


def check_backend(trt: Any, tmp: Path) -> dict[str, Any]:
    """TensorRTBackend over a stand-in runtime (GPU-only): failures reported, FP16 output, threads."""
    import threading

    import runtime.backends.tensorrt_backend as tbe
    from runtime.artifact import ArtifactMeta, sidecar_path
    from tests.trt_bindings.gpu_free import install_runtime

    meta = ArtifactMeta(variant="tiny_cityscapes", num_classes=19, class_names=tuple(map(str, range(19))),
                        palette=tuple((i, i, i) for i in range(19)), crop=(8, 16), mean=(0.0, 0.0, 0.0),
                        std=(1.0, 1.0, 1.0), precision="fp16")
    engine = tmp / "m.engine"
    engine.write_bytes(b"ENGINE")
    sidecar_path(engine).write_text(json.dumps({"meta": meta.to_dict(), "build": {
        "tensorrt_version": trt.__version__, "gpu_name": "Host", "compute_capability": "8.7"}}))
    out: dict[str, Any] = {}
    for case, kw in (("no_context", {"context_ok": False}), ("address_refused", {"address_ok": False})):
        install_runtime(trt, **kw)
        tbe.open_cuda = lambda kind: HostCuda()
        out[case] = _run(lambda: tbe.TensorRTBackend(engine).__enter__())
    calls = install_runtime(trt)
    cuda = HostCuda()
    tbe.open_cuda = lambda kind: cuda
    result: dict[str, Any] = {}
    with tbe.TensorRTBackend(engine, device=1) as backend:
        worker = threading.Thread(target=lambda: result.update(
            shape=list(backend(np.zeros((1, 3, 8, 16), np.float32)).shape)), name="inference-worker")
        worker.start()
        worker.join()
    out["ok"] = {"output_shape": result.get("shape"), "executed": calls["executed"], "device": cuda.device,
                 "activated_on": sorted(set(cuda.threads)), "freed": len(cuda.freed), "streams_left": cuda.streams}
    return out


def check_layer_report(trt: Any, tmp: Path) -> dict[str, Any]:
    """export.layer_report's TensorRT path (deserialize, verbosity, engine inspector with the real
    enums) over a stand-in runtime whose inspector returns LAYER_INFO."""
    import export.engine_layers as lr
    from runtime.artifact import ArtifactMeta, sidecar_path
    from tests.trt_bindings.gpu_free import install_runtime

    meta = ArtifactMeta(variant="tiny_cityscapes", num_classes=19, class_names=tuple(map(str, range(19))),
                        palette=tuple((i, i, i) for i in range(19)), crop=(8, 16), mean=(0.0, 0.0, 0.0),
                        std=(1.0, 1.0, 1.0), precision="int8", layout="trt+fp16",
                        extra={"kept_float_nodes": ["/nl/MatMul"]})
    engine = tmp / "m_int8.engine"
    engine.write_bytes(b"\x00ENGINE\x01")
    side = {"tensorrt_version": trt.__version__, "onnx": "m_int8_fp16.onnx"}    # the ONNX is not beside it
    sidecar_path(engine).write_text(json.dumps({"meta": meta.to_dict(), "build": side}))
    calls = install_runtime(trt, layer_info=json.dumps(LAYER_INFO))
    report = lr.report_for(engine)
    out: dict[str, Any] = {"ok": {"summary": report.summary(), "exit_code": report.exit_code, "notes": report.notes,
                                  "verdicts": {r.layer: r.verdict for r in report.rows}, "inspected": calls["inspected"]}}
    for case, kw in (("names_only", {"verbosity": "LAYER_NAMES_ONLY"}), ("not_an_engine", {"engine_ok": False})):
        install_runtime(trt, layer_info=json.dumps(LAYER_INFO), **kw)
        out[case] = _run(lambda: lr.report_for(engine))
    sidecar_path(engine).write_text(json.dumps({"meta": meta.to_dict(), "build": {**side, "tensorrt_version": "7.1.3"}}))
    out["other_version"] = _run(lambda: lr.report_for(engine))
    return out


def audit(trt: Any) -> dict[str, Any]:
    """Every ``trt.X[.Y]`` and method/attribute on a TensorRT object in the project's TensorRT code:
    present in this version, or named in a ``hasattr`` guard of the same file."""
    used: set[tuple[str, str, str]] = set()
    missing, guarded_missing = [], []
    for rel in TRT_FILES:
        tree = ast.parse((REPO / rel).read_text())
        guards = {n.args[1].value for n in ast.walk(tree) if isinstance(n, ast.Call)
                  and getattr(n.func, "id", "") == "hasattr" and len(n.args) == 2
                  and isinstance(n.args[1], ast.Constant)}
        for node in ast.walk(tree):
            if not isinstance(node, ast.Attribute):
                continue
            recv = ast.unparse(node.value)
            if recv == "trt":
                owner: Any = trt
            elif recv.startswith("trt."):
                owner = trt
                for part in recv.split(".")[1:]:
                    owner = getattr(owner, part, None)
            elif recv in RECEIVERS:
                owner = getattr(trt, RECEIVERS[recv], None)
            else:
                continue
            used.add((rel, recv, node.attr))
            if owner is None or not hasattr(owner, node.attr):
                guarded = node.attr in guards or any(part in guards for part in recv.split("."))
                (guarded_missing if guarded else missing).append(f"{rel}: {recv}.{node.attr}")
    return {"names_checked": len(used), "missing_unguarded": sorted(set(missing)),
            "missing_guarded": sorted(set(guarded_missing))}


def main() -> int:
    import tensorrt as trt

    from export.trt_builder import Features

    ndf = trt.NetworkDefinitionCreationFlag
    report: dict[str, Any] = {"version": trt.__version__, "module": trt.__file__,
                              "features": asdict(Features.detect(trt)),
                              "enum": {k: (int(getattr(ndf, k)) if hasattr(ndf, k) else None)
                                       for k in ("EXPLICIT_BATCH", "STRONGLY_TYPED")},
                              "audit": audit(trt)}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        report["routes"] = check_routes(trt, tmp)
        report["timing_cache"] = check_timing_cache(trt, tmp)
        report["calibrator"] = check_calibrator(trt, tmp)
        report.update(check_errors(trt, tmp))
        report["backend"] = check_backend(trt, tmp)
        report["layer_report"] = check_layer_report(trt, tmp)
    print(json.dumps(report, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
