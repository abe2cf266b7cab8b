"""export/benchmark.py's parts: interleaved rounds and the quietest round, FLOP count, measured and
theoretical peaks (never more than 100 % of a peak), the peer runners (OpenVINO, NNCF) on a tiny
model, and the per-precision table with its targets (INT8 against NNCF at the same float precision)."""
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
                     "peaks": {"fp32": 200.0, "int8": 400.0}},
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
    assert "| int8 | ort_int8_ort_layout | toolkit | 2.50 | 2.70 | 320 | 80% | 4.00x | 1.20x | 1.20x vs f32 |" in rows
    assert "| fp32 | ort_fp32 | toolkit | 5.00 | 5.00 | 160 | 80% | 2.00x | 1.20x | - |" in rows
    assert "target int8_vs_fastest_peer_int8 >= 1.1: 1.20x (met) in the quietest round, 1.11x (met) by medians" in rows
    assert "target bf16_vs_fastest_peer >= 1.0: not measured in the quietest round" in rows
    paths["nncf_int8"] = path("int8", "peer", 2.4)
    assert "int8_vs_fastest_peer_int8 >= 1.1: 0.96x (MISSED) in the quietest round" in "\n".join(bench_report.latency_rows(latency(paths), MACHINE))


def test_flop_count_and_peaks_from_every_kernel():
    import torch

    from bench.roofline import KERNELS, best_kernels, count_flops, remeasure, survey

    class TwoConvs(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = torch.nn.Conv2d(3, 8, 3, padding=1)
            self.b = torch.nn.Conv2d(8, 4, 1)

        def forward(self, x):
            return self.b(torch.relu(self.a(x)))

    h, w = 16, 32
    assert count_flops(TwoConvs(), (h, w)) == 2 * h * w * (3 * 8 * 9 + 8 * 4)
    rows = survey(1, budget_s=0.01, sizes=(128,), precisions=["fp32", "int8"])
    assert [(r["precision"], r["kernel"]) for r in rows] == [(p, k) for p in ("fp32", "int8") for k, _ in KERNELS[p]]
    measured = [r for r in rows if "rate" in r]
    assert {r["kernel"] for r in measured} >= {"torch.mm f32", "ONNX Runtime MatMul f32",
                                               "ONNX Runtime MatMulInteger u8*s8", "torch._int_mm s8*s8"}
    best = best_kernels(rows)
    assert best["fp32"]["rate"] == max(r["rate"] for r in measured if r["precision"] == "fp32")
    assert set(remeasure(best, 1, budget_s=0.01)) == {"fp32", "int8"}


def test_theoretical_peak_per_isa_and_clock(tmp_path):
    from bench.roofline import cpu_clock_ghz, ops_per_cycle, theoretical_peaks

    zen = ["AVX2", "FMA", "AVX-512", "AVX512-VNNI", "AVX512-BF16"]   # 2 FMA x 16 lanes; VNNI 4x, BF16 2x
    t = theoretical_peaks(zen, 2.6, 2)
    assert t["rates"] == pytest.approx({"fp32": 332.8, "bf16": 665.6, "int8": 1331.2})
    assert "2 FMA units x 16 fp32 lanes x 2 x 2.60 GHz x 2 cores" in t["how"]
    assert theoretical_peaks(["AVX2", "FMA"], 3.0, 4)["rates"] == pytest.approx({"fp32": 384.0, "int8": 768.0})
    assert ops_per_cycle(["AVX2", "FMA", "AVX-VNNI"]) == {"fp32": 32, "int8": 128}
    spr = zen + ["AMX", "AMX-BF16", "AMX-INT8"]
    assert ops_per_cycle(spr) == {"fp32": 64, "int8": 2048, "bf16": 1024}
    assert theoretical_peaks(zen, None, 2)["rates"] == {}
    (tmp_path / "cpuinfo").write_text("processor\t: 0\ncpu MHz\t\t: 2596.136\n\nprocessor\t: 1\n")
    (tmp_path / "max_freq").write_text("3700000\n")
    assert cpu_clock_ghz(str(tmp_path / "max_freq"), str(tmp_path / "cpuinfo"))[0] == 3.7
    clock, source = cpu_clock_ghz(str(tmp_path / "none"), str(tmp_path / "cpuinfo"))
    assert clock == pytest.approx(2.596136) and "nominal" in source


def test_no_row_shows_more_than_100_percent_of_a_peak():
    """The Zen 5 case: the GEMM kernels measured 181 GFLOP/s, the model ran at 320: the peak is raised."""
    paths = {"pytorch_eager_fp32": path("fp32", "peer", 10.0), "openvino_fp32": path("fp32", "peer", 2.5),
             "ort_fp32": path("fp32", "toolkit", 2.6), "nncf_int8": path("int8", "peer", 0.5),
             "ort_int8_ort_layout": path("int8", "toolkit", 4.0)}
    lat = latency(paths)
    lat["main"]["peaks"] = {"fp32": 181.0, "int8": 1000.0}
    lat["theoretical"] = {"rates": {"fp32": 332.8, "int8": 1331.2}, "how": "2 FMA units x ...", "clock_source": "x"}
    lat["peak_kernels"] = {"fp32": "torch.mm f32 2048^2", "int8": "ONNX Runtime MatMulInteger u8*s8 2048^2"}
    rows = bench_report.latency_rows(lat, MACHINE)
    cells = [line.split(" | ")[6] for line in rows if line.startswith("| fp32") or line.startswith("| int8")]
    assert cells and all(float(c.rstrip("%")) <= 100 for c in cells)
    text = "\n".join(rows)
    assert "| fp32 | openvino_fp32 | peer | 2.50 | 2.50 | 320 | 100% |" in text
    assert "| int8 | nncf_int8 | peer | 0.500 | 0.500 | 1600 | 100% |" in text
    assert ("peak FP32: 181 GFLOP/s measured (torch.mm f32 2048^2) = 54 % of the ISA figure 333; raised to 320 by "
            "openvino_fp32") in text
    assert "peak INT8: 1000 GOP/s measured (ONNX Runtime MatMulInteger u8*s8 2048^2) = 75 % of the ISA figure 1331; " \
           "raised to 1600 by nncf_int8" in text
    summary = bench_report.summarise(lat)
    assert summary["targets"]["toolkit_int8_of_int8_peak >= 0.9"][0] == pytest.approx(200 / 1600)
    old = latency(paths)
    old["main"]["peaks"] = {"fp32_gflops": 181.0, "int8_gops": 1000.0}     # a benchmark.json of before
    old_rows = "\n".join(bench_report.latency_rows(old, MACHINE))
    assert "| fp32 | openvino_fp32 | peer | 2.50 | 2.50 | 320 | 100% |" in old_rows


def test_int8_rows_against_nncf_at_the_same_float_precision_and_untimed_bf16_rows():
    from bench.peers import not_timed

    paths = {"pytorch_eager_fp32": path("fp32", "peer", 10.0),
             "nncf_int8": path("int8", "peer", 2.0, executed_precision="bf16"),
             "nncf_int8_f32": path("int8", "peer", 3.0, executed_precision="f32"),
             "toolkit_openvino_int8_trt_layout": path("int8", "toolkit", 3.3, executed_precision="f32"),
             "toolkit_openvino_int8_trt_layout_bf16": path("int8", "toolkit", 1.6, executed_precision="bf16"),
             "ort_int8_ort_layout": path("int8", "toolkit", 2.4)}
    lat = latency(paths)
    text = "\n".join(bench_report.latency_rows(lat, MACHINE))
    for row in ("| toolkit_openvino_int8_trt_layout_bf16 | toolkit | 1.60 | 1.60 | 500 | 100% | 6.25x | 1.25x | 1.25x vs bf16 |",
                "| ort_int8_ort_layout | toolkit | 2.40 | 2.40 | 333 | 67% | 4.17x | 0.83x | 1.25x vs f32 |",
                "| toolkit_openvino_int8_trt_layout | toolkit | 3.30 | 3.30 | 242 | 48% | 3.03x | 0.61x | 0.91x vs f32 |"):
        assert row in text
    targets = bench_report.summarise(lat)["targets"]
    assert targets["toolkit_openvino_int8_trt_layout_vs_nncf_f32 >= 1.0"][0] == pytest.approx(3.0 / 3.3)
    assert targets["toolkit_openvino_int8_trt_layout_bf16_vs_nncf_bf16 >= 1.0"][0] == pytest.approx(1.25)
    assert targets["toolkit_int8_vs_nncf_as_users_run_it >= 1.0"][0] == pytest.approx(1.25)
    assert "target toolkit_openvino_int8_trt_layout_vs_nncf_f32 >= 1.0: 0.91x (MISSED)" in text
    assert not_timed(set(), ["f32", "bf16"]) == {} and not_timed({"bf16"}, ["f32"]) == {}
    untimed = not_timed(set(), ["f32"])
    assert set(untimed) == {"toolkit_openvino_bf16", "toolkit_openvino_int8_ort_layout_bf16",
                            "toolkit_openvino_int8_trt_layout_bf16"}
    lat["not_timed"] = untimed
    text = "\n".join(bench_report.latency_rows(lat, MACHINE))
    assert "| bf16 | toolkit_openvino_bf16 | toolkit | not native here | - |" in text
    assert "| int8 | toolkit_openvino_int8_ort_layout_bf16 | toolkit | not native here | - |" in text


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
