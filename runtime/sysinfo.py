"""What machine a figure came from: CPU model, the ISA features that decide CPU speed, threads, versions.

Every benchmark, report and the quickstart print this, so a number taken on an AMX server is never
read as a promise for an AVX2 laptop or a Jetson. Torch-free; library versions are read only for
packages that are already importable (nothing heavy is imported to report it).
"""
from __future__ import annotations

import os
import platform
import sys
from pathlib import Path
from typing import Any

# /proc/cpuinfo flag -> the name users know; the order is the order of speed-relevance.
ISA_FLAGS = (("avx2", "AVX2"), ("fma", "FMA"), ("avx512f", "AVX-512"), ("avx512_vnni", "AVX512-VNNI"),
             ("avx_vnni", "AVX-VNNI"), ("avx512_bf16", "AVX512-BF16"), ("avx512_fp16", "AVX512-FP16"),
             ("amx_tile", "AMX"), ("amx_bf16", "AMX-BF16"), ("amx_int8", "AMX-INT8"),
             ("asimd", "NEON"), ("asimddp", "NEON-DOTPROD"), ("sve", "SVE"))
LIBRARIES = ("numpy", "onnxruntime", "onnx", "torch", "openvino", "nncf", "cv2", "tensorrt")
# Environment variables that cap the ISA a library dispatches to (used to emulate an older CPU):
# oneDNN (PyTorch's and OpenVINO's CPU kernels), ATen's vectorised kernels, MKL (PyTorch's sgemm).
# ONNX Runtime's MLAS has no such cap: it always runs the best kernels the CPU has.
ISA_CAP_VARS = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS")


def _cpuinfo(path: str = "/proc/cpuinfo") -> dict[str, str]:
    """The first processor's fields (Linux); empty elsewhere."""
    fields: dict[str, str] = {}
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return fields
    for line in text.split("\n\n", 1)[0].splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip().lower()] = value.strip()
    return fields


def cpu_model(info: dict[str, str] | None = None) -> str:
    info = _cpuinfo() if info is None else info
    return info.get("model name") or info.get("hardware") or platform.processor() or platform.machine()


def isa_features(info: dict[str, str] | None = None) -> list[str]:
    """The speed-relevant ISA extensions this CPU reports, e.g. ``['AVX2', 'FMA', 'AVX-512', ...]``."""
    info = _cpuinfo() if info is None else info
    flags = set((info.get("flags") or info.get("features") or "").split())
    return [name for flag, name in ISA_FLAGS if flag in flags]


def isa_class(features: list[str]) -> str:
    """One word for tables: ``amx`` > ``avx512-vnni`` > ``avx512`` > ``avx2`` > ``neon`` > ``baseline``."""
    for needle, name in (("AMX", "amx"), ("AVX512-VNNI", "avx512-vnni"), ("AVX-512", "avx512"),
                         ("AVX2", "avx2"), ("NEON", "neon")):
        if needle in features:
            return name
    return "baseline"


def threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:   # not Linux
        return os.cpu_count() or 1


def library_versions() -> dict[str, str]:
    """Versions of the libraries already imported or cheaply importable (never torch unless loaded)."""
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        module = sys.modules.get(name)
        if module is None and name in ("numpy", "onnxruntime", "onnx"):
            try:
                module = __import__(name)
            except ImportError:
                continue
        if module is not None:
            versions[name] = str(getattr(module, "__version__", "?"))
    return versions


def machine_info() -> dict[str, Any]:
    """Everything a benchmark JSON records about where it ran."""
    info = _cpuinfo()
    features = isa_features(info)
    return {"cpu": cpu_model(info), "isa": isa_class(features), "isa_features": features,
            "threads": threads(), "cpus": os.cpu_count(), "platform": platform.platform(),
            "machine": platform.machine(), "versions": library_versions(),
            "isa_caps": {k: os.environ[k] for k in ISA_CAP_VARS if os.environ.get(k)}}


def describe(info: dict[str, Any] | None = None) -> str:
    """One line for logs and report headers."""
    info = info or machine_info()
    versions = ", ".join(f"{k} {v}" for k, v in info["versions"].items())
    features = " ".join(info["isa_features"]) or "none detected"
    caps = ", ".join(f"{k}={v}" for k, v in info.get("isa_caps", {}).items())
    capped = f" (ISA capped: {caps}; ONNX Runtime is not capped)" if caps else ""
    return f"{info['cpu']} [{info['isa']}: {features}]{capped}, {info['threads']} threads; {versions}"


def native_bf16(features: list[str] | None = None) -> bool:
    """True where the CPU computes bf16 in hardware (AVX512-BF16, AMX-BF16; Arm BF16 is not detected).

    ``torch.ops.mkldnn._is_mkldnn_bf16_supported()`` also says True on plain AVX-512 CPUs, where
    oneDNN emulates bf16: measured there (AVX-512 + VNNI Xeon, export/benchmark.py, r50os8 256x512),
    OpenVINO's bf16 hint ran 4.6x slower than f32 and PyTorch bf16 autocast 3.7x slower than FP32
    (tiny variant), so bf16 is offered only where this returns True.
    """
    features = isa_features() if features is None else features
    return any(f in features for f in ("AVX512-BF16", "AMX-BF16"))


if __name__ == "__main__":
    print(describe())
