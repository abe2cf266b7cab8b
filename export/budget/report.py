"""The report of a ``--max-drop`` run: every candidate, its drop, agreement and CPU speed, the
sensitivity ranking, which frames were used, and why the winner won (JSON + Markdown, atomic)."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Sequence

from runtime.fileio import atomic_open
from runtime.tables import format_table
from export.budget.options import budget_tag


def _pct(value: float | None, total: float) -> str:
    return "-" if value is None or not total else f"{100 * value / total:.1f}"


def _num(value: float | None, spec: str, scale: float = 1.0) -> str:
    return "-" if value is None else format(value * scale, spec)


def candidate_rows(facts: dict) -> list[list[str]]:
    """Header + one row per candidate, in the order tried."""
    win = facts.get("winner")
    rows = [["#", "kind", "method", "float units", "float MACs %", "drop (pts)", "agreement %", "ms/tile (eval)",
             "ms/tile (timed)", "front", "result"]]
    for i, c in enumerate(facts["result"].candidates, 1):
        status = "skipped" if c.passed is None else ("pass" if c.passed else "over budget")
        if c is win:
            status = "**chosen**"
        note = c.note if c.note and (c.passed is None or c.kind == "QAT") else ""
        rows.append([str(i), c.kind, c.method, str(c.k), _pct(c.float_macs, facts["total_macs"]), _num(c.drop, "+.3f"),
                     _num(c.agreement, ".3f", 100), _num(c.ms_per_tile, ".1f"), _num(c.timed_ms, ".1f"),
                     "*" if c.pareto else "", status + (f" ({note})" if note else "")])
    return rows


def markdown(facts: dict, args: Any, written: Sequence[Any], machine: str) -> str:
    result, win = facts["result"], facts["winner"]
    ref = facts["reference"]
    lines = [f"# Precision search: {facts['precision'].upper()} within {args.max_drop:g} mIoU points",
             "", f"- command: `{_command(args)}`", f"- machine: {machine}",
             f"- frames: {facts['frames']}", f"- evaluation: {facts['eval_data']}; PyTorch reference mIoU "
             f"{100 * ref['miou']:.2f} %", f"- {facts['calibration']}",
             f"- units that may be kept in float: {len(facts['units'])} (at most {facts['cap']} per candidate); "
             f"always float: {', '.join(facts['forced']) or 'nothing'}", *_speed_line(facts), "",
             "## Candidates", "", *_table(candidate_rows(facts)), "",
             "Drop = PyTorch mIoU - artifact mIoU on the evaluation frames (mIoU points); agreement = pixels "
             "labelled as the reference. ms/tile (eval): measured during the evaluation run; (timed): every "
             "measured candidate timed side by side in ONNX Runtime on this CPU (fastest call over interleaved "
             "rounds, median of 3 blocks). Float MACs %: share of the multiply-accumulates of the rankable units "
             "left in float. Kind: PTQ = post-training calibration only, QAT = quantization-aware fine-tuning. "
             "Front (*): no other candidate has a smaller drop at no more CPU time, or a shorter CPU time at no "
             "larger drop (times within 3 % count as equal). Engine time: not "
             "measured by this command (TensorRT engines are built from the chosen files on the target; the "
             "front's files are in the run's work folder only while it runs).", "",
             *_front_lines(facts), *_qat_lines(facts),
             "## Decision", "", f"Chosen: **{win.label}** (float: {_kept(win)}), drop {win.drop:+.3f}, "
             f"agreement {100 * win.agreement:.3f} %. Why: {facts['why']}."]
    lines += [f"- finalist {c.label}: drop {c.drop:+.3f}, {_num(c.timed_ms, '.1f')} ms/tile timed"
              for c in result.finalists]
    lines += [f"- rejected: {r}" for r in facts["rejected"]]
    lines += _price_lines(facts) if facts["precision"] == "int8" else []
    if facts.get("trt"):
        t = facts["trt"]
        lines.append(f"- TensorRT layout of the winner (run as fake-quantised FP32 by ONNX Runtime): drop "
                     f"{t['drop']:+.3f}, agreement {100 * t['agreement']:.3f} %")
    lines += ["", "## Written", ""] + [f"- `{a.path}` ({a.meta.precision}, {a.meta.layout})" for a in written]
    lines += ["", "## Sensitivity ranking (most sensitive first)", ""]
    if not any(result.rankings.values()):
        lines.append("- not measured: a candidate with no unit kept in float met the budget")
    for method, units in result.rankings.items():
        if units:
            lines.append(f"- {method}: " + "; ".join(f"{u.name} ({u.detail})" for u in units[:12])
                         + (" ..." if len(units) > 12 else ""))
    return "\n".join(lines) + "\n"


def _front_lines(facts: dict) -> list[str]:
    front = facts.get("front") or []
    if not front:
        return []
    plot = facts.get("front_png")
    lines = ["## Accuracy / speed front", "", "Pareto-optimal candidates, fastest first: " + "; ".join(
        f"{c.label} ({c.drop:+.3f} pts, {_num(c.timed_ms if c.timed_ms is not None else c.ms_per_tile, '.1f')} ms/tile)"
        for c in front) + "."]
    if plot:
        lines += ["", f"![accuracy / speed front]({Path(plot).name})"]
    return lines + [""]


def _qat_lines(facts: dict) -> list[str]:
    q = facts.get("qat")
    if not q:
        return []
    took = "reused a finished run" if q["reused"] else f"{q['seconds'] / 60:.1f} min on this machine"
    return ["## Quantization-aware fine-tuning", "",
            f"- started from: {q['base']}; fake quantization at every Q/DQ of its TensorRT-layout file "
            "(models/qat.py), activation scales fixed at the calibrated ranges, BatchNorm folded",
            f"- {q['iters']} iterations, batch {q['batch']}, lr {q['lr']:g} (poly), rescaling {q['ratio_range']} of "
            f"the frames' size, on {q['data']}",
            f"- time: {took} (run folder {q['run_dir']})",
            f"- TensorRT layout after fine-tuning: drop {_num(q['trt']['drop'], '+.3f')}, agreement "
            f"{_num(q['trt']['agreement'], '.3f', 100)} %", ""]


def _speed_line(facts: dict) -> list[str]:
    """The header line on units kept float for speed (``export.budget.Int8Space.float_for_speed``)."""
    speed = facts.get("speed_float")
    if speed is None:
        return ["- float for speed: not measured (--no-float-for-speed)"] if facts["precision"] == "int8" else []
    fastest = sorted(speed.ratios.items(), key=lambda kv: kv[1])[:3]
    seen = ", ".join(f"{n} {r:.3f}x" for n, r in fastest)
    again = ", ".join(f"{n} {r:.3f}x" for n, r in speed.second.items())
    return [f"- float for speed (ONNX Runtime on this CPU, each unit alone float vs nothing float, fastest "
            f"call of each over interleaved rounds, median of 3 blocks; a unit counts when it saves more than "
            f"4 % in two timings): {speed.note}; fastest alone: {seen}" + (f"; timed again: {again}" if again else "")]


def _price_lines(facts: dict) -> list[str]:
    price = facts.get("price")
    base = "nothing float" if not facts["forced"] else f"only the always-float set ({', '.join(facts['forced'])}) float"
    if price is None:
        return [f"- cost of the budget on this CPU: none, the winner is its method's fastest file ({base})"]
    return [f"- cost of the budget on this CPU: the winner takes **{price['ratio']:.3f}x** the time of "
            f"{price['against']} ({base}), fastest calls over {price['rounds']} interleaved rounds in ONNX "
            "Runtime"]


def _kept(cand: Any) -> str:
    return ", ".join(cand.keep) or "nothing beyond the always-float set"


def _table(rows: list[list[str]]) -> list[str]:
    return format_table(rows[1:], rows[0], markdown=True).splitlines()


def _command(args: Any) -> str:
    import shlex

    argv = getattr(args, "argv", None)
    return "python export/to_trt.py " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))


def to_json(facts: dict, args: Any, written: Sequence[Any], machine: dict) -> dict:
    from calibration.budget import save_units

    result = facts["result"]
    return {"precision": facts["precision"], "max_drop": args.max_drop, "command": _command(args), "machine": machine,
            "frames": facts["frames"], "eval_data": facts["eval_data"], "calibration": facts["calibration"],
            "reference": {k: v for k, v in facts["reference"].items() if k != "per_class_iou"},
            "always_float": facts["forced"], "max_float_units": facts["cap"], "total_macs": facts["total_macs"],
            "candidates": [c.record() for c in result.candidates],
            "finalists": [c.record() for c in result.finalists], "winner": facts["winner"].record(),
            "why": facts["why"], "rejected": facts["rejected"], "trt_layout": facts.get("trt"),
            "float_for_speed": facts["speed_float"].record() if facts.get("speed_float") else None,
            "price": facts.get("price"), "qat": facts.get("qat"),
            "front": [c.label for c in facts.get("front") or []],
            "rankings": {m: save_units(u) for m, u in result.rankings.items()},
            "written": [str(a.path) for a in written]}


def write_report(fp32: Any, facts: dict, args: Any, written: Sequence[Any],
                 staging: Path | None = None) -> tuple[Path, Path, Path]:
    """The report's final paths (JSON, Markdown, front PNG); written there, or under the same names in
    ``staging`` when the caller places them (with the artifacts, as one set)."""
    from runtime.sysinfo import describe, machine_info


    from export.budget.front import draw_front

    info = machine_info()
    stem = fp32.path.parent / f"budget_{budget_tag(facts['precision'], None, args.max_drop)}"
    jpath, mpath, ppath = Path(f"{stem}.json"), Path(f"{stem}.md"), Path(f"{stem}_front.png")
    folder = fp32.path.parent if staging is None else Path(staging)
    title = f"{facts['precision'].upper()} candidates, budget {args.max_drop:g} mIoU points"
    draw_front(facts["result"].candidates, args.max_drop, facts["winner"], folder / ppath.name, title)
    facts = {**facts, "front_png": ppath}
    with atomic_open(folder / jpath.name, "w") as f:
        json.dump(to_json(facts, args, written, info), f, indent=1, default=str)
    with atomic_open(folder / mpath.name, "w") as f:
        f.write(markdown(facts, args, written, describe(info)))
    return jpath, mpath, ppath


def print_table(result: Any, total_macs: float, winner: Any = None) -> None:
    """The candidate table on the terminal (also when the budget is not met)."""
    rows = candidate_rows({"result": result, "total_macs": total_macs, "winner": winner})
    print(format_table(rows[1:], rows[0]))
