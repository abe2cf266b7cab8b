"""The per-precision table of export/benchmark.py: every path side by side, achieved vs peak, ratios,
and the issue's targets (toolkit best >= the fastest peer per precision; best INT8 >= 1.1x the
fastest peer INT8 and >= 4x PyTorch eager FP32), all from the quietest round (medians alongside)."""
from __future__ import annotations

from typing import Any

from runtime.tables import format_table

ORDER = ("fp32", "fp16", "bf16", "int8")
EAGER = "pytorch_eager_fp32"


def precision_of(path: dict[str, Any]) -> str:
    """A path's precision; OpenVINO's default is filed under what it resolved to on this CPU."""
    if path["precision"] != "default":
        return path["precision"]
    executed = path["facts"].get("executed_precision", "f32")
    return {"f32": "fp32", "bf16": "bf16", "f16": "fp16"}.get(executed, executed)


def fastest(paths: dict[str, dict], precision: str, owner: str, key: str = "quietest_s") -> str | None:
    names = [n for n, p in paths.items() if precision_of(p) == precision and p["owner"] == owner]
    return min(names, key=lambda n: paths[n][key]) if names else None


def summarise(lat: dict[str, Any]) -> dict[str, Any]:
    """Ratios and targets per precision, for the JSON and the table."""
    paths, out = lat["main"]["paths"], {}
    eager = paths.get(EAGER, {}).get("quietest_s")
    for prec in ORDER:
        tk, peer = fastest(paths, prec, "toolkit"), fastest(paths, prec, "peer")
        row: dict[str, Any] = {"toolkit_best": tk, "fastest_peer": peer}
        if tk and peer:
            row["toolkit_vs_peer"] = paths[peer]["quietest_s"] / paths[tk]["quietest_s"]
        if tk and eager:
            row["toolkit_vs_eager_fp32"] = eager / paths[tk]["quietest_s"]
        med_tk, med_peer = fastest(paths, prec, "toolkit", "median_s"), fastest(paths, prec, "peer", "median_s")
        if med_tk and med_peer:       # by medians each side's fastest may be another path
            row["toolkit_vs_peer_median"] = paths[med_peer]["median_s"] / paths[med_tk]["median_s"]
        if med_tk and eager:
            row["toolkit_vs_eager_fp32_median"] = paths[EAGER]["median_s"] / paths[med_tk]["median_s"]
        out[prec] = row
    int8 = out["int8"]
    targets = {"int8_vs_fastest_peer_int8 >= 1.1": "toolkit_vs_peer",
               "int8_vs_pytorch_eager_fp32 >= 4": "toolkit_vs_eager_fp32"}
    out["targets"] = {k: [int8.get(v), int8.get(v + "_median")] for k, v in targets.items()}
    out["targets"].update({f"{p}_vs_fastest_peer >= 1.0": [out[p].get("toolkit_vs_peer"),
                                                          out[p].get("toolkit_vs_peer_median")] for p in ("fp32", "bf16")})
    return out


def _rate(p: dict, flops: float, peaks: dict | None) -> tuple[str, str]:
    rate = flops / p["quietest_s"] / 1e9
    if not peaks:
        return f"{rate:.0f}", "-"
    peak = peaks["int8_gops"] if precision_of(p) == "int8" else peaks["fp32_gflops"]
    return f"{rate:.0f}", f"{100 * rate / peak:.0f}%"


def _verdict(value: float | None, goal: float) -> str:
    if value is None:
        return "not measured"
    return f"{value:.2f}x ({'met' if value >= goal else 'MISSED'})"


def latency_rows(lat: dict[str, Any], machine: dict[str, Any]) -> list[str]:
    from runtime.sysinfo import describe

    main, paths = lat["main"], lat["main"]["paths"]
    summary = lat.get("summary") or summarise(lat)
    peaks, flops = main.get("peaks"), lat["flops_per_unit"]
    unit = f"frame {lat['frame']} ({lat['crops_per_unit']} crops)" if lat.get("frame") else \
        f"{lat['crop'][0]}x{lat['crop'][1]} crop"
    eager = paths.get(EAGER, {}).get("quietest_s")
    rows = [f"machine: {describe(machine)}",
            f"{main['rounds']} interleaved rounds, quietest = round {main['quietest_round']}; seconds per {unit}, "
            f"batch 1, {lat['threads']} threads; model {flops / 1e9:.1f} GFLOP per {unit.split(' (')[0]}"]
    if peaks:
        rows.append(f"peaks (best of the rounds): FP32 {peaks['fp32_gflops']:.0f} GFLOP/s (torch.mm 2048^2), "
                    f"INT8 {peaks['int8_gops']:.0f} GOP/s (ORT MatMulInteger u8*s8 2048^2)")
    table = []
    for prec in ORDER:
        peer = summary[prec]["fastest_peer"] or summary["fp32"]["fastest_peer"]
        for name in sorted((n for n in paths if precision_of(paths[n]) == prec), key=lambda n: paths[n]["quietest_s"]):
            p = paths[name]
            rate, pct = _rate(p, flops, peaks)
            vs_peer = f"{paths[peer]['quietest_s'] / p['quietest_s']:.2f}x" if peer else "-"
            vs_eager = f"{eager / p['quietest_s']:.2f}x" if eager else "-"
            table.append([prec, name, p["owner"], f"{p['quietest_s']:.2f}", f"{p['median_s']:.2f}", rate, pct,
                          vs_eager, vs_peer])
    head = ["precision", "path", "whose", "quietest s", "median s", "G(FL)OP/s", "of peak", "x eager FP32",
            "x fastest peer"]
    rows += ["", *format_table(table, head, align="lllr", markdown=True).splitlines()]
    rows += ["", "x fastest peer: against the fastest peer of the same precision (FP16: of FP32, it has none)."]
    rows += [f"target {k}: {_verdict(quiet, float(k.split('>= ')[1]))} in the quietest round, "
             f"{_verdict(median, float(k.split('>= ')[1]))} by medians"
             for k, (quiet, median) in summary["targets"].items()]
    setups = [f"{n} {p['setup_s']:.1f} s" + "".join(f", {k} {v:.1f} s" for k, v in p["facts"].items()
                                                  if k.endswith("_s"))
              for n, p in paths.items() if p["setup_s"] > 1 or p["facts"]]
    rows.append("setup (build / compile / quantise; outside the latency): " + "; ".join(setups))
    if "options" in lat:
        rows.append("ONNX Runtime options: " + ", ".join(
            f"{n} {p['quietest_s']:.2f} s" for n, p in lat["options"]["paths"].items()))
    return rows
