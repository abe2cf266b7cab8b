"""The per-precision table of export/benchmark.py: every path side by side, achieved vs peak, ratios,
and the issues' targets (toolkit best >= the fastest peer per precision; best INT8 >= 1.1x the
fastest peer INT8 and >= 4x PyTorch eager FP32; INT8 against NNCF at the same float precision and
against the measured INT8 peak), all from the quietest round (medians alongside).

"of peak" never exceeds 100 %: a path that runs faster than the measured peak of its precision
raises that peak to its own rate, and the table says so (:func:`effective_peaks`)."""
from __future__ import annotations

from typing import Any

from runtime.tables import format_table

ORDER = ("fp32", "fp16", "bf16", "int8")
EAGER = "pytorch_eager_fp32"
NNCF = "nncf_int8"
TRT_LAYOUT_OV = "toolkit_openvino_int8_trt_layout"


def precision_of(path: dict[str, Any]) -> str:
    """A path's precision; OpenVINO's default is filed under what it resolved to on this CPU."""
    if path["precision"] != "default":
        return path["precision"]
    executed = path["facts"].get("executed_precision", "f32")
    return {"f32": "fp32", "bf16": "bf16", "f16": "fp16"}.get(executed, executed)


def float_parts(path: dict[str, Any]) -> str:
    """What an INT8 path's non-quantized layers run in: OpenVINO's executed precision, else f32."""
    return str(path["facts"].get("executed_precision", "f32"))


def fastest(paths: dict[str, dict], precision: str, owner: str, key: str = "quietest_s") -> str | None:
    names = [n for n, p in paths.items() if precision_of(p) == precision and p["owner"] == owner]
    return min(names, key=lambda n: paths[n][key]) if names else None


def nncf_for(paths: dict[str, dict], floats: str, key: str = "quietest_s") -> str | None:
    """The (fastest) NNCF INT8 path whose float layers ran in ``floats``."""
    names = [n for n, p in paths.items() if n.startswith(NNCF) and float_parts(p) == floats]
    return min(names, key=lambda n: paths[n][key]) if names else None


def _ratio(paths: dict[str, dict], slow: str | None, fast: str | None, key: str) -> float | None:
    """How many times faster ``fast`` ran than ``slow`` (None when either is missing)."""
    if not slow or not fast or slow not in paths or fast not in paths:
        return None
    return paths[slow][key] / paths[fast][key]


# -- peaks --------------------------------------------------------------------------------------------
def peak_key(path: dict[str, Any]) -> str:
    """The peak a path is read against: INT8, BF16 (measured only where the CPU has native bf16; an
    emulated bf16 row has no peak to be read against), else FP32 (FP16 in ONNX Runtime computes in FP32)."""
    prec = precision_of(path)
    return prec if prec in ("int8", "bf16") else "fp32"


def path_rate(path: dict[str, Any], flops: float) -> float:
    return flops / path["quietest_s"] / 1e9


def effective_peaks(paths: dict[str, dict], flops: float, rates: dict[str, float]) -> tuple[dict, dict]:
    """The measured peaks, each raised to the fastest path read against it where that path ran
    faster (the GEMM kernels are not the best the machine does there); ``raised`` names those paths."""
    out, raised = dict(rates), {}
    for name, p in paths.items():
        key = peak_key(p)
        if key in out and path_rate(p, flops) > out[key]:
            out[key], raised[key] = path_rate(p, flops), name
    return out, raised


def peak_lines(lat: dict[str, Any], rates: dict[str, float], raised: dict[str, str]) -> list[str]:
    """One line per precision: the measured peak, its kernel, and its share of the ISA's figure."""
    from bench.roofline import peak_rates

    measured, kernels = peak_rates(lat["main"].get("peaks")), lat.get("peak_kernels", {})
    theory = lat.get("theoretical") or {}
    lines = []
    for prec in ("fp32", "bf16", "int8"):
        if prec not in measured:
            continue
        unit = "GOP/s" if prec == "int8" else "GFLOP/s"
        text = f"peak {prec.upper()}: {measured[prec]:.0f} {unit} measured ({kernels.get(prec, 'best GEMM')})"
        ceiling = theory.get("rates", {}).get(prec)
        if ceiling:
            text += f" = {100 * measured[prec] / ceiling:.0f} % of the ISA figure {ceiling:.0f}"
            if measured[prec] > 1.05 * ceiling:
                text += " (above it: the cores ran faster than the assumed clock, e.g. turbo)"
        if prec in raised:
            text += (f"; raised to {rates[prec]:.0f} by {raised[prec]}, which ran faster than any GEMM kernel "
                     "measured: its row reads 100 %")
        lines.append(text)
    if theory.get("how"):
        lines.append(f"ISA figure: {theory['how']}; clock from {theory.get('clock_source', '?')}")
    return lines


# -- summary and targets -------------------------------------------------------------------------
def summarise(lat: dict[str, Any]) -> dict[str, Any]:
    """Ratios and targets per precision, for the JSON and the table."""
    paths, out = lat["main"]["paths"], {}
    for prec in ORDER:
        tk, peer = fastest(paths, prec, "toolkit"), fastest(paths, prec, "peer")
        med_tk, med_peer = fastest(paths, prec, "toolkit", "median_s"), fastest(paths, prec, "peer", "median_s")
        row: dict[str, Any] = {"toolkit_best": tk, "fastest_peer": peer}
        pairs = {"toolkit_vs_peer": (peer, tk, "quietest_s"), "toolkit_vs_eager_fp32": (EAGER, tk, "quietest_s"),
                 "toolkit_vs_peer_median": (med_peer, med_tk, "median_s"),   # by medians each side's fastest may differ
                 "toolkit_vs_eager_fp32_median": (EAGER, med_tk, "median_s")}
        row.update({k: v for k, args in pairs.items() if (v := _ratio(paths, *args)) is not None})
        out[prec] = row
    int8 = out["int8"]
    targets = {"int8_vs_fastest_peer_int8 >= 1.1": "toolkit_vs_peer",
               "int8_vs_pytorch_eager_fp32 >= 4": "toolkit_vs_eager_fp32"}
    out["targets"] = {k: [int8.get(v), int8.get(v + "_median")] for k, v in targets.items()}
    out["targets"].update({f"{p}_vs_fastest_peer >= 1.0": [out[p].get("toolkit_vs_peer"),
                                                          out[p].get("toolkit_vs_peer_median")]
                           for p in ("fp32", "bf16")})
    out["targets"].update(int8_targets(lat))
    return out


def int8_targets(lat: dict[str, Any]) -> dict[str, list[float | None]]:
    """Issue 18's INT8 targets: OpenVINO on the TensorRT-layout file vs NNCF at the same float
    precision, the best toolkit INT8 vs NNCF as users run it (OpenVINO's default float precision),
    and the best toolkit INT8 against the (effective) INT8 peak."""
    from bench.roofline import peak_rates

    paths, out = lat["main"]["paths"], {}
    for name in (TRT_LAYOUT_OV, TRT_LAYOUT_OV + "_bf16"):
        if name in paths:
            floats = float_parts(paths[name])
            out[f"{name}_vs_nncf_{floats} >= 1.0"] = [
                _ratio(paths, nncf_for(paths, floats, k), name, k) for k in ("quietest_s", "median_s")]
    best = [fastest(paths, "int8", "toolkit", k) for k in ("quietest_s", "median_s")]
    out["toolkit_int8_vs_nncf_as_users_run_it >= 1.0"] = [
        _ratio(paths, NNCF, b, k) for b, k in zip(best, ("quietest_s", "median_s"))]
    rates, _ = effective_peaks(paths, lat["flops_per_unit"], peak_rates(lat["main"].get("peaks")))
    if best[0] and "int8" in rates:
        share = path_rate(paths[best[0]], lat["flops_per_unit"]) / rates["int8"]
        out["toolkit_int8_of_int8_peak >= 0.9"] = [share, None]
    return out


def _verdict(value: float | None, goal: float, percent: bool = False) -> str:
    if value is None:
        return "not measured"
    text = f"{100 * value:.0f} %" if percent else f"{value:.2f}x"
    return f"{text} ({'met' if value >= goal - 1e-9 else 'MISSED'})"


def target_lines(summary: dict[str, Any]) -> list[str]:
    lines = []
    for k, (quiet, median) in summary["targets"].items():
        goal, percent = float(k.split(">= ")[1]), "peak" in k
        line = f"target {k}: {_verdict(quiet, goal, percent)} in the quietest round"
        if not (percent and median is None):
            line += f", {_verdict(median, goal, percent)} by medians"
        lines.append(line)
    return lines


# -- the table -------------------------------------------------------------------------------------
HEAD = ["precision", "path", "whose", "quietest s", "median s", "G(FL)OP/s", "of peak", "x eager FP32",
        "x fastest peer", "x NNCF same float"]


def _secs(value: float) -> str:
    """Seconds with two decimals, three where a small model runs under a second."""
    return f"{value:.2f}" if value >= 1 else f"{value:.3f}"


def path_row(name: str, lat: dict[str, Any], rates: dict[str, float], peer: str | None) -> list[str]:
    paths, flops = lat["main"]["paths"], lat["flops_per_unit"]
    p, eager = paths[name], paths.get(EAGER, {}).get("quietest_s")
    rate = path_rate(p, flops)
    peak = rates.get(peak_key(p))
    nncf = nncf_for(paths, float_parts(p)) if precision_of(p) == "int8" else None
    vs_nncf = f"{_ratio(paths, nncf, name, 'quietest_s'):.2f}x vs {float_parts(p)}" if nncf else "-"
    return [precision_of(p), name, p["owner"], _secs(p["quietest_s"]), _secs(p["median_s"]), f"{rate:.0f}",
            f"{min(100.0, 100 * rate / peak):.0f}%" if peak else "-",
            f"{eager / p['quietest_s']:.2f}x" if eager else "-",
            f"{paths[peer]['quietest_s'] / p['quietest_s']:.2f}x" if peer else "-", vs_nncf]


def table_rows(lat: dict[str, Any], summary: dict[str, Any], rates: dict[str, float]) -> list[list[str]]:
    paths, untimed = lat["main"]["paths"], lat.get("not_timed") or {}
    table = []
    for prec in ORDER:
        peer = summary[prec]["fastest_peer"] or summary["fp32"]["fastest_peer"]
        for name in sorted((n for n in paths if precision_of(paths[n]) == prec), key=lambda n: paths[n]["quietest_s"]):
            table.append(path_row(name, lat, rates, peer))
        table += [[prec, name, u["owner"], u["reason"]] + ["-"] * (len(HEAD) - 4)
                  for name, u in untimed.items() if u["precision"] == prec]
    return table


def latency_rows(lat: dict[str, Any], machine: dict[str, Any]) -> list[str]:
    from bench.roofline import peak_rates
    from runtime.sysinfo import describe

    main, paths = lat["main"], lat["main"]["paths"]
    summary = lat.get("summary") or summarise(lat)
    flops = lat["flops_per_unit"]
    rates, raised = effective_peaks(paths, flops, peak_rates(main.get("peaks")))
    unit = f"frame {lat['frame']} ({lat['crops_per_unit']} crops)" if lat.get("frame") else \
        f"{lat['crop'][0]}x{lat['crop'][1]} crop"
    rows = [f"machine: {describe(machine)}",
            f"{main['rounds']} interleaved rounds, quietest = round {main['quietest_round']}; seconds per {unit}, "
            f"batch 1, {lat['threads']} threads; model {flops / 1e9:.1f} GFLOP per {unit.split(' (')[0]}"]
    rows += peak_lines(lat, rates, raised)
    rows += ["", *format_table(table_rows(lat, summary, rates), HEAD, align="lllr", markdown=True).splitlines()]
    rows += ["", "x fastest peer: against the fastest peer of the same precision (FP16: of FP32, it has none). "
                 "x NNCF same float: INT8 rows against NNCF's INT8 whose float layers ran in the same precision. "
                 "of peak: against the INT8 peak (int8), the BF16 peak (bf16; measured where native, else -), "
                 "else the FP32 peak."]
    rows += target_lines(summary)
    setups = [f"{n} {p['setup_s']:.1f} s" + "".join(f", {k} {v:.1f} s" for k, v in p["facts"].items()
                                                  if k.endswith("_s"))
              for n, p in paths.items() if p["setup_s"] > 1 or p["facts"]]
    rows.append("setup (build / compile / quantise; outside the latency): " + "; ".join(setups))
    if "options" in lat:
        rows.append("ONNX Runtime options: " + ", ".join(
            f"{n} {p['quietest_s']:.2f} s" for n, p in lat["options"]["paths"].items()))
    return rows
