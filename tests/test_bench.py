"""export/benchmark.py's parts: interleaved rounds and the quietest round, FLOP count, peaks, the
peer runners (OpenVINO, NNCF) on a tiny model, and the per-precision table with its targets."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench import report as bench_report, study as benchmark
from bench.peers import Runner, build_runners

MACHINE = {"cpu": "Test CPU", "isa": "avx2", "isa_features": ["AVX2", "FMA"], "threads": 2,
           "versions": {"numpy": "2"}, "isa_caps": {}}


def path(prec: str, owner: str, quiet: float, median: float | None = None, **facts) -> dict:
    return {"precision": prec, "owner": owner, "what": "", "setup_s": 0.0, "facts": facts,
            "runs": [quiet], "median_s": median or quiet, "min_s": quiet, "quietest_s": quiet}


def latency(paths: dict) -> dict:
    return {"main": {"paths": paths, "quietest_round": 2, "rounds": 3,
                     "peaks": {"fp32_gflops": 200.0, "int8_gops": 400.0}},
            "crop": [512, 1024], "frame": None, "crops_per_unit": 1, "flops_per_unit": 800e9, "threads": 2}


def test_latency_rounds_interleave_and_report_the_quietest_round(monkeypatch):
    calls: list[str] = []
    times = iter([9.0, 9.0,            # warm-ups (a, b)
                  4.0, 2.0,            # round 1: total 6
                  3.0, 2.5,            # round 2: total 5.5 -> quietest
                  5.0, 1.0])           # round 3: total 6
    monkeypatch.setattr(benchmark, "call_all", lambda fn, inputs: (fn(None), next(times))[1])
    runners = [Runner(n, "fp32", "peer", lambda n=n: (lambda x: calls.append(n))) for n in ("a", "b")]
    peaks = iter([{"fp32_gflops": 1.0}, {"fp32_gflops": 3.0}, {"fp32_gflops": 2.0}])
    out = benchmark.latency_rounds(runners, [np.zeros(1)], 3, lambda *a: None, peaks=lambda: next(peaks))
    assert calls == ["a", "b"] * 4                               # warm-up, then a/b interleaved per round
    assert out["quietest_round"] == 2 and out["peaks"] == {"fp32_gflops": 3.0}   # the machine's best
    a, b = out["paths"]["a"], out["paths"]["b"]
    assert (a["quietest_s"], a["median_s"], a["min_s"]) == (3.0, 4.0, 3.0)
    assert (b["quietest_s"], b["median_s"], b["min_s"]) == (2.5, 2.0, 1.0)   # quietest round, not per-path min


def test_per_precision_summary_ratios_and_targets():
    paths = {"pytorch_eager_fp32": path("fp32", "peer", 10.0), "openvino_fp32": path("fp32", "peer", 6.0),
             "openvino_default": path("default", "peer", 5.0, executed_precision="bf16"),
             "ort_fp32": path("fp32", "toolkit", 5.0), "ort_fp16": path("fp16", "toolkit", 6.0),
             "nncf_int8": path("int8", "peer", 3.0), "ort_int8_ort_layout": path("int8", "toolkit", 2.5, 2.7)}
    lat = latency(paths)
    s = bench_report.summarise(lat)
    assert s["fp32"] == {"toolkit_best": "ort_fp32", "fastest_peer": "openvino_fp32", "toolkit_vs_peer": 1.2,
                         "toolkit_vs_eager_fp32": 2.0, "toolkit_vs_peer_median": 1.2,
                         "toolkit_vs_eager_fp32_median": 2.0}
    assert s["bf16"]["fastest_peer"] == "openvino_default" and s["bf16"]["toolkit_best"] is None
    assert s["int8"]["toolkit_vs_peer"] == pytest.approx(1.2) and s["int8"]["toolkit_vs_eager_fp32"] == 4.0
    rows = "\n".join(bench_report.latency_rows(lat, MACHINE))
    assert "machine: Test CPU [avx2: AVX2 FMA], 2 threads" in rows
    assert "| int8 | ort_int8_ort_layout | toolkit | 2.50 | 2.70 | 320 | 80% | 4.00x | 1.20x |" in rows
    assert "| fp32 | ort_fp32 | toolkit | 5.00 | 5.00 | 160 | 80% | 2.00x | 1.20x |" in rows
    assert "target int8_vs_fastest_peer_int8 >= 1.1: 1.20x (met) in the quietest round, 1.11x (met) by medians" in rows
    assert "target bf16_vs_fastest_peer >= 1.0: not measured in the quietest round" in rows
    paths["nncf_int8"] = path("int8", "peer", 2.4)
    assert "int8_vs_fastest_peer_int8 >= 1.1: 0.96x (MISSED) in the quietest round" in "\n".join(bench_report.latency_rows(latency(paths), MACHINE))


def test_flop_count_and_peaks():
    import torch

    from bench.roofline import count_flops, fp32_peak, int8_peak

    class TwoConvs(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = torch.nn.Conv2d(3, 8, 3, padding=1)
            self.b = torch.nn.Conv2d(8, 4, 1)

        def forward(self, x):
            return self.b(torch.relu(self.a(x)))

    h, w = 16, 32
    assert count_flops(TwoConvs(), (h, w)) == 2 * h * w * (3 * 8 * 9 + 8 * 4)
    assert fp32_peak(1, budget_s=0.05, n=256) > 0.1 and int8_peak(1, budget_s=0.05, n=256) > 0.1


def test_skip_filters_paths_by_name_and_group_without_building_any():
    arts = {k: Path(f"/nonexistent/{k}.onnx") for k in ("fp32", "fp16", "fp16_all", "int8_ort", "int8_trt")}
    names = [r.name for r in build_runners(arts, None, None, 1, np.zeros(1), set())]
    from bench.peers import native_openvino_hints

    bf16_rows = 3 if "bf16" in native_openvino_hints() else 0     # toolkit OpenVINO bf16: only where native
    assert names[:2] == ["pytorch_eager_fp32", "torch_compile_fp32"] and len(names) == 16 + bf16_rows
    assert "nncf_int8_f32" in names and ("toolkit_openvino_int8_trt_layout_bf16" in names) == bool(bf16_rows)
    kept = build_runners(arts, None, None, 1, np.zeros(1), {"compile", "bf16", "int8", "openvino_default"})
    assert {r.precision for r in kept} == {"fp32", "fp16"}
    assert "torch_compile_fp32" not in [r.name for r in kept] and "openvino_default" not in [r.name for r in kept]
    assert {r.owner for r in build_runners(arts, None, None, 1, np.zeros(1), {"peer"})} == {"toolkit"}


def test_openvino_and_nncf_peers_run_the_tiny_model(tmp_path):
    pytest.importorskip("nncf", reason="NNCF is not installed (pip install -e .[openvino])")
    import torch

    from bench.peers import nncf_int8, openvino_compiled, ort_session
    from export.exporter import export_fp32, resolve_source

    torch.manual_seed(0)
    onnx_path, meta, _ = export_fp32(resolve_source("tiny_cityscapes", None, True), tmp_path, log=lambda *a: None)

    class Tiles:                       # the calibration set's interface: len() and tile(i)
        def __init__(self) -> None:
            self.data = np.random.default_rng(0).standard_normal((3, 3, *meta.crop)).astype(np.float32)

        def __len__(self) -> int:
            return len(self.data)

        def tile(self, i: int) -> np.ndarray:
            return self.data[i]

    x = Tiles().tile(0)[None]
    ref = ort_session(onnx_path, 1)(x)
    facts: dict = {}
    fp32 = openvino_compiled(onnx_path, 1, "f32", facts)(x)
    assert facts["executed_precision"] == "f32" and np.abs(fp32 - ref).max() < 1e-3
    facts = {}
    int8 = np.array(nncf_int8(onnx_path, Tiles(), 1, facts)(x))
    assert facts["calibration_tiles"] == 3 and facts["quantize_s"] > 0
    assert int8.shape == ref.shape and np.isfinite(int8).all() and not np.array_equal(int8, fp32)
