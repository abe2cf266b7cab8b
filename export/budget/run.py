"""``export/to_trt.py --max-drop X``: the fastest artifact that stays within X mIoU points of PyTorch.

INT8 (``--int8 --max-drop X``): first, each layer unit is timed float (everything else quantised)
against nothing float in ONNX Runtime on this CPU, and units the model runs measurably faster with
float (twice measured; on the sample model the attention, whose QLinearSoftmax is slow, and the
classifier head) stay float in every candidate: that costs no time and no accuracy
(``--no-float-for-speed`` skips it). Candidates are then (calibration method) x (the k most
sensitive of the other units kept in float); each is built in the ONNX-Runtime-CPU layout, scored on held-out frames through
the runtime tiler against the PyTorch reference, and the cheapest passing one (measured CPU time per
tile) wins. Its TensorRT-layout twin is then built with the same decision and must pass on the same
frames. FP16 (``--fp16 --max-drop X``): tensors that come near FP16's range on the calibration tiles
force their nodes to FP32; then units are added to FP32 by peak magnitude until the drop fits
(cost: float32 MACs, the artifact is for TensorRT; the CPU time is reported).

Everything the search tries lives in a temporary folder (``.budget.PID.XXXXXXXX.tmp`` beside the
FP32 ONNX; one a killed run left is removed by the next run). The chosen artifacts and the report
(``budget_<precision>_maxdrop<X>.json`` / ``.md``) are written only when the budget is met, all
finished in that folder first and then renamed into place as one set: a run killed between the
renames leaves a journal, and the next ``--max-drop`` run removes the files of that incomplete set.
"""
from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from calibration.budget import Unit
from export.budget.options import BudgetOptions, budget_tag
from export.budget.report import print_table, write_report
from export.budget.scoring import HeldOut, PairedTimer, check_disjoint, open_held_out, time_per_tile
from export.budget.front import mark_front, time_all
from export.budget.qat import run_qat
from export.budget.search import FloatForSpeed, choose, explain, faster_in_float, search, unmet_budget
from export.pipeline import INT8_RECIPE, Artifact, CalibRequest
from export.exporter import artifact_name, digest
from runtime.errors import ToolkitError
from runtime.fileio import (atomic_path, place_files, remove_stale_temporaries, sha256_file, temporary_dir,
                            undo_unfinished_placements)

DEFAULT_METHODS = ("percentile", "entropy", "max")
SENSITIVITY_TILES = 8
TIMING_TILES = 8
CONFIRM_ROUNDS = 6           # rounds per block of the second, longer timing (the first: 3)
FLOAT_SPEED_SECONDS = 240    # about this much timing for the first pass; beyond it, the largest units are not timed
FLOAT_SPEED_RECIPE = 4       # 2: fastest calls, each unit confirmed alone; 3: median of 3 blocks; 4: denormals flushed on the caller



class Int8Space:
    """INT8 candidates of one FP32 ONNX: ranges per method (cached), units ranked per method."""

    def __init__(self, fp32: Artifact, calib: Any, methods: Sequence[str], forced: Sequence[str],
                 work: Path, max_float: int | None, progress: bool, log: Callable[[str], None]) -> None:
        import onnx

        from calibration.qdq import preprocess

        self.fp32, self.calib, self.methods, self.work, self.log = fp32, calib, list(methods), work, log
        self.progress, self.sha = progress, sha256_file(fp32.path)
        self.cdir = fp32.path.parent / "calibration"
        self.pre = self.cdir / f"pre{INT8_RECIPE}_{self.sha[:12]}.onnx"   # shared with export.pipeline
        if not self.pre.is_file():
            with atomic_path(self.pre) as tmp:
                preprocess(fp32.path, tmp)
        self.pre_model = onnx.load(str(self.pre))
        for method in self.methods:        # a typo fails before any work
            self.parse(method)
        self.forced, self.max_float, self.speed_float = list(forced), max_float, []
        self._set_units()

    def _set_units(self) -> None:
        from calibration.budget import layer_units
        from calibration.qdq import excluded_nodes

        self.units = layer_units(self.pre_model, excluded_nodes(self.pre, self.forced))
        self.cap = len(self.units) // 2 if self.max_float is None else min(self.max_float, len(self.units))
        self.total_macs = sum(u.macs for u in self.units)

    def float_for_speed(self, tiles: np.ndarray, threads: int | None = None) -> Any:
        """Time each unit float (all else quantised) against nothing float in ONNX Runtime on this
        CPU; keep float, in every candidate, the units that make the model faster so (confirmed by a
        second timing, see ``budget_search.faster_in_float``). Cached per machine and runtime."""
        import onnxruntime as ort

        from calibration.budget import read_cache, write_cache
        from runtime.sysinfo import machine_info

        method = self.methods[0]                 # speed does not depend on the ranges' values
        info = machine_info()
        key = {"recipe": FLOAT_SPEED_RECIPE, "int8": INT8_RECIPE, "fp32": self.sha, "forced": self.forced,
               "tiles": len(tiles), "cpu": info["cpu"], "isa": info["isa_features"], "cpus": info["threads"],
               "onnxruntime": ort.__version__, "threads": threads}
        cache = self.cdir / f"floatspeed{FLOAT_SPEED_RECIPE}_{digest(key)[:16]}.json"
        found = read_cache(cache, key)
        if found is not None:
            self.log(f"units faster in float on this CPU: reused {cache.name}")
            out = FloatForSpeed(**found)
        else:
            from tqdm import tqdm

            with PairedTimer(self.build(method, ()), tiles, threads=threads) as timer:
                order = speed_order(self.units)
                fit = max(2, int(FLOAT_SPEED_SECONDS / timer.seconds_per_ratio()))     # the attention, the head
                ratios = {}
                for unit in tqdm(order[:fit], desc="CPU time with one unit float", unit="layer", leave=False,
                                 disable=None if self.progress else True):
                    path = self.work / f"speed_{digest([method, unit.name])[:16]}.onnx"
                    self.quantize(method, (unit.name,), "ort", path)
                    ratios[unit.name] = timer.ratio(path)
                    path.unlink()
                out = faster_in_float(ratios, lambda names: timer.ratio(self.build(method, names),
                                                                         rounds=CONFIRM_ROUNDS))
            if len(ratios) < len(order):
                out.note += (f" (timed {len(ratios)} of {len(order)} units, the attention and head first, then "
                             f"the smallest: about {FLOAT_SPEED_SECONDS} s of timing at "
                             f"{1e3 * timer.call_s:.0f} ms per call)")
            write_cache(cache, key, out.record())
            self.log(f"units faster in float on this CPU: {out.note} (cached in {cache.name})")
        if out.chosen:
            self.speed_float = list(out.chosen)
            self.forced += [n for n in out.chosen if n not in self.forced]
            self._set_units()
        return out

    @staticmethod
    def parse(method: str) -> tuple[str, float | None]:
        from calibration.qdq import parse_method

        return parse_method(method)

    def ranges(self, method: str) -> Path:
        """The activation ranges of ``method`` (file shared with export.pipeline's cache)."""
        from calibration.qdq import compute_ranges

        name, pct = self.parse(method)
        tag = name + (f"-{pct}" if pct else "")
        path = self.cdir / f"ranges{INT8_RECIPE}_{self.sha[:12]}_{self.calib.key[:12]}_{tag}.json"
        compute_ranges(self.pre, self.calib, name, pct, path, self.fp32.meta.batch, self.progress)
        return path

    def max_keep(self, method: str) -> int:
        return self.cap

    def quantize(self, method: str, keep: Sequence[str], layout: str, path: Path, pre: Path | None = None) -> list[str]:
        """The candidate's Q/DQ file in ``layout``; ``pre``: another FP32 graph of the same structure
        (the fine-tuned one of QAT) quantized with this candidate's ranges and kept-float set."""
        from calibration.qdq import quantize

        return quantize(pre or self.pre, self.ranges(method), path, layout, self.parse(method)[0],
                        self.forced + list(keep), self.calib)

    def build(self, method: str, keep: Sequence[str]) -> Path:
        path = self.work / f"int8_ort_{digest([method, self.forced, list(keep)])[:16]}.onnx"
        if not path.is_file():
            self.quantize(method, keep, "ort", path)
        return path

    def ranking(self, method: str) -> list[Unit]:
        import onnx

        from calibration.budget import SENSITIVITY_RECIPE, int8_sensitivity

        def full_qdq() -> Any:
            return onnx.load(str(self.build(method, ())))

        def unit_float(unit: Unit) -> Any:          # exactly the candidate the search would build
            path = self.work / f"sensitivity_{digest([method, unit.name])[:16]}.onnx"
            self.quantize(method, (unit.name,), "ort", path)
            model = onnx.load(str(path))
            path.unlink()
            return model

        tiles = sensitivity_tiles(self.calib)
        key = {"recipe": SENSITIVITY_RECIPE, "int8": INT8_RECIPE, "fp32": self.sha, "calib": self.calib.key,
               "method": method, "forced": self.forced, "tiles": len(tiles), "layout": "ort"}
        cache = self.cdir / f"sensitivity{SENSITIVITY_RECIPE}_{digest(key)[:16]}.json"
        ranked, reused = int8_sensitivity(full_qdq, self.pre_model, self.units, tiles, self.fp32.meta.batch,
                                          cache, key, progress=self.progress, unit_float=unit_float)
        self.log(f"{method}: per-layer sensitivity of {len(ranked)} units on {len(tiles)} calibration tiles "
                 f"({'reused ' + cache.name if reused else 'measured, cached in ' + cache.name})")
        return ranked


class Fp16Space:
    """FP16 candidates: nodes forced FP32 by range, then units kept FP32 by peak magnitude."""

    methods = ("fp16",)

    def __init__(self, fp32: Artifact, calib: Any, forced: Sequence[str], work: Path,
                 max_float: int | None, log: Callable[[str], None]) -> None:
        import onnx

        from calibration.budget import activation_peaks, fp16_ranking, layer_units
        from calibration.graph import name_nodes, select_nodes

        self.fp32, self.work = fp32, work
        self.model = onnx.load(str(fp32.path))
        name_nodes(self.model.graph, "fp16")            # the names convert_fp16 gives (same rule)
        peaks = activation_peaks(self.model, sensitivity_tiles(calib, 16), fp32.meta.batch)
        user = select_nodes(self.model.graph, list(forced)) if forced else []
        by_range, _ = fp16_ranking(self.model, [], peaks)
        self.forced = list(dict.fromkeys(user + by_range))
        self.by_range = by_range
        units = layer_units(self.model, self.forced)
        _, self.ranked = fp16_ranking(self.model, units, peaks)
        self.units = units
        self.cap = len(units) // 2 if max_float is None else min(max_float, len(units))
        self.total_macs = sum(u.macs for u in units)
        log(f"FP16: {len(by_range)} nodes must stay FP32 (peak |value| within 4x of 65504 on "
            f"{min(16, len(calib))} calibration tiles){': ' + ', '.join(by_range[:6]) if by_range else ''}")

    def ranking(self, method: str) -> list[Unit]:
        return self.ranked

    def max_keep(self, method: str) -> int:
        return self.cap

    def build(self, method: str, keep: Sequence[str]) -> Path:
        import onnx

        from export.precision import convert_fp16

        path = self.work / f"fp16_{digest(list(keep))[:16]}.onnx"
        if not path.is_file():
            model, _kept = convert_fp16(self.model, self.forced + list(keep))
            onnx.save(model, str(path))
        return path


def speed_order(units: Sequence[Unit]) -> list[Unit]:
    """The order units are timed float in: the attention and the head (non-convolution INT8 kernels:
    a quantised softmax, requantised logits) first, then by multiply-accumulates, smallest first: where
    a unit's compute is small next to its quantise / dequantise traffic, float has the best chance."""
    from calibration.graph import ATTENTION, HEAD

    named = [u for u in units if u.name in (ATTENTION, HEAD)]
    return named + sorted((u for u in units if u not in named), key=lambda u: u.macs)


def sensitivity_tiles(calib: Any, count: int = SENSITIVITY_TILES) -> np.ndarray:
    """A seeded, evenly spread subset of the calibration tiles (labels are not needed)."""
    idx = np.linspace(0, len(calib) - 1, num=min(count, len(calib))).round().astype(int)
    return np.stack([calib.tile(int(i)) for i in sorted(set(idx.tolist()))])


def budget_artifacts(args: BudgetOptions, log: Callable[[str], None]) -> tuple[list[Artifact], str]:
    """FP32 ONNX (exported or reused), then the budgeted artifacts; returns (artifacts, weights label)."""
    from export.chain import ChainRequest, check_inputs, export_chain
    from runtime.values import parse_hw

    req = ChainRequest(model=args.model, out=Path(args.out), checkpoint=args.checkpoint, random_init=args.random_init,
                       crop=parse_hw(args.crop) if args.crop else None, batch=args.batch, output=args.output,
                       data=args.data or args.calib_data, calib=CalibRequest(args.calib_data))
    check_inputs(req)                            # bad calibration data fails before any file is written
    undo_unfinished_placements(args.out)         # a killed run's incomplete set of budgeted files ...
    remove_stale_temporaries(Path(args.out) / "budget")     # ... and its work folder
    if args.random_init:
        raise ToolkitError("--max-drop needs trained weights: an mIoU drop of a random model means nothing",
                           fix="pass --checkpoint PATH (or the variant's released weights)")
    result = export_chain(dataclasses.replace(req, calib=None), log)     # FP32 only: the search does the rest
    fp32, source = result.fp32, result.source
    return [fp32] + run_budget(args, fp32, source, log), source.label


def run_budget(args: BudgetOptions, fp32: Artifact, source: Any, log: Callable[[str], None]) -> list[Artifact]:
    """The whole ``--max-drop`` run: search, confirm, write the artifacts and the report."""
    from export.pipeline import calibration_set

    progress = not args.quiet
    calib = calibration_set(fp32, CalibRequest(args.calib_data, max_images=args.calib_images or 500), progress)
    dataset, eval_desc = open_held_out(args.eval_data, args.calib_data, label_ids=args.label_ids or "labelIds")
    frames = check_disjoint(dataset, calib, args.calib_data)
    log(f"{frames}; evaluation frames: {eval_desc}")
    held = HeldOut(dataset, fp32.meta.variant, str(source.checkpoint) if source.checkpoint else None,
                   fp32.meta.crop, fp32.path.parent / "calibration", log=log)
    log(f"PyTorch reference mIoU {100 * held.reference['miou']:.2f} % on {len(dataset)} held-out frames")
    with temporary_dir(fp32.path.parent / "budget") as work:
        if args.int8:
            written, facts = _int8(args, fp32, calib, held, work, progress, log)
        else:
            written, facts = _fp16(args, fp32, calib, held, work, progress, log)
        if held.reused:
            log(f"{held.reused} candidate scores reused from {held.scores_path.name} (same artifact bytes, same frames)")
        facts.update(frames=frames, eval_data=eval_desc, reference=held.reference)
        report = write_report(fp32, facts, args, written, staging=work)
        place_files([(work / path.name, path) for path in [a.path for a in written] + list(report)])
    log(f"report: {report[0]}, {report[1].name} and {report[2].name}")
    return written


def _int8(args: BudgetOptions, fp32: Artifact, calib: Any, held: Any, work: Path, progress: bool,
          log: Callable[[str], None]) -> tuple[list[Artifact], dict]:
    from calibration.graph import parse_keep

    methods = [m.strip() for m in (args.calib_method or ",".join(DEFAULT_METHODS)).split(",") if m.strip()]
    space = Int8Space(fp32, calib, methods, parse_keep(args.keep_int8, ()), work, args.max_float_layers,
                      progress, log)
    tiles = sensitivity_tiles(calib, TIMING_TILES)
    speed = None if args.no_float_for_speed else space.float_for_speed(tiles)
    result = search(space, held.score, args.max_drop, progress, log)
    print_table(result, space.total_macs)
    finalists = list(result.finalists)
    qat = None
    if not finalists and args.qat_data:
        qat = run_qat(args, space, _qat_base(result), held, work, log)
        result.candidates.append(qat.cand)
        finalists = [qat.cand] if qat.cand.passed else []
    time_all(result.candidates, lambda paths: time_per_tile(paths, tiles))     # every measured candidate, side by side
    rejected: list[str] = []
    while finalists:
        win, why = choose(finalists, None, by="time")
        if win.kind == "QAT":
            trt_path, trt = qat.trt_path, qat.trt
        else:
            trt_path = work / "winner_trt.onnx"
            space.quantize(win.method, win.keep, "trt", trt_path)
            trt = held.score(trt_path)
        if trt["drop"] is not None and not trt["error"] and trt["drop"] <= args.max_drop + 1e-9:
            break
        rejected.append(f"{win.label}: ORT layout passed but the TensorRT layout drops {trt['drop']}")
        finalists.remove(win)
    else:
        mark_front(result.candidates)
        print_table(result, space.total_macs)
        raise unmet_budget(result, "INT8", _int8_fix(args, space, qat, rejected))
    front = mark_front(result.candidates)
    print_table(result, space.total_macs, win)
    price = _price(space, win, tiles)
    written = _write_int8(args, fp32, space, win, work, trt_path, {"ort": _figures(win), "trt": trt})
    facts = {"precision": "int8", "result": result, "winner": win, "why": f"{why}; {explain(result, win)}",
             "rejected": rejected, "speed_float": speed, "price": price, "front": front,
             "qat": qat.facts if qat else None,
             "units": space.units, "total_macs": space.total_macs, "forced": space.forced, "cap": space.cap,
             "trt": trt, "calibration": calib.describe()}
    return written, facts


def _qat_base(result: Any) -> Any:
    """The layout QAT fine-tunes: the best-calibrated method with nothing float beyond the always-float
    set (the fastest file the search builds; keeping more float is what PTQ already tried)."""
    zero = [c for c in result.candidates if c.k == 0 and c.drop is not None]
    if not zero:
        raise ToolkitError("no post-training candidate could be measured, so there is nothing to fine-tune",
                           fix="see the errors above")
    return min(zero, key=lambda c: c.drop)


def _int8_fix(args: BudgetOptions, space: Int8Space, qat: Any, rejected: list[str]) -> str:
    """The way out of an unmet INT8 budget, with what QAT reached when it ran."""
    note = f" (TensorRT layout over budget: {'; '.join(rejected)})" if rejected else ""
    if qat is not None:
        t = qat.facts
        return (f"quantization-aware fine-tuning did not reach it either ({t['iters']} iterations: drop "
                f"{qat.cand.drop:+.3f}, TensorRT layout {t['trt']['drop']:+.3f}); raise --max-drop, fine-tune longer "
                f"(--qat-iters, now {args.qat_iters}), allow float layers (--max-float-layers N, now {space.cap} of "
                f"{len(space.units)}), or use --fp16" + note)
    qat_hint = "" if args.no_qat else ", fine-tune with --qat-data DIR (quantization-aware training)"
    return (f"raise --max-drop, allow more float layers (--max-float-layers N, now {space.cap} of "
            f"{len(space.units)}){qat_hint}, or use --fp16" + note)


def _price(space: Int8Space, win: Any, tiles: np.ndarray) -> dict | None:
    """What the budget costs: the winner's CPU time over its method with no unit float (k = 0, the
    fastest file the search builds), measured side by side; None when the winner is that file."""

    if not win.keep:
        return None
    base = space.build(win.method, ())
    with PairedTimer(base, tiles) as timer:
        ratio = timer.ratio(win.path, rounds=CONFIRM_ROUNDS)
    return {"against": f"{win.method}, 0 float", "ratio": ratio, "rounds": CONFIRM_ROUNDS}


def _figures(c: Any) -> dict:
    return {"miou": c.miou, "drop": c.drop, "agreement": c.agreement, "ms_per_tile": c.timed_ms or c.ms_per_tile}


def _write_int8(args: BudgetOptions, fp32: Artifact, space: Int8Space, win: Any, work: Path, trt_path: Path,
                figures: dict) -> list[Artifact]:
    import onnx

    from calibration.qdq import excluded_nodes
    from export.pipeline import TRT_TARGETS, fusion_check

    name, pct = space.parse(win.method)
    kept = excluded_nodes(space.pre, space.forced + list(win.keep))
    fusion = fusion_check(onnx.load(str(trt_path)), "weak", kept, "the budget's TensorRT-layout file").counts()
    out = []
    for layout, src in (("ort", win.path), ("trt", trt_path)):
        extra = {"calibration": {"method": name, "percentile": pct, "tiles": len(space.calib),
                                 "images": space.calib.n_images, "set_key": space.calib.key},
                 "keep_float": space.forced + list(win.keep), "kept_float_nodes": kept,
                 "float_for_speed": space.speed_float,
                 "source_onnx_sha256": space.sha, **_decision(args, win, figures[layout], layout),
                 **({"trt_target": TRT_TARGETS["weak"], "fusion": fusion} if layout == "trt" else {})}
        out.append(_stage(fp32, src, "int8", layout, budget_tag("int8", layout, args.max_drop), extra, work))
    return out


def _decision(args: BudgetOptions, win: Any, fig: dict, layout: str) -> dict:
    """The ``budget`` and ``verify`` metadata entries of a chosen artifact."""
    return {"verify": {"against": "pytorch (held-out frames, tiled)", "agreement": fig["agreement"],
                       "drop": fig["drop"]}, "budget": _budget_entry(args, win, fig, layout)}


def _budget_entry(args: BudgetOptions, win: Any, fig: dict, layout: str) -> dict:
    return {"max_drop": args.max_drop, "kind": win.kind, "method": win.method, "float_units": list(win.keep),
            "layout": layout,
            "measured": fig, "eval_data": args.eval_data or f"{args.calib_data} (val split)",
            "calib_data": args.calib_data}


def _stage(fp32: Artifact, src: Path, precision: str, layout: str, tag: str, extra: dict, work: Path) -> Artifact:
    """A candidate file with its metadata under its final name, in ``work`` (``run_budget`` places
    the whole set); the Artifact carries the final path."""
    import onnx

    from export.exporter import write_meta

    path = fp32.path.with_name(artifact_name(fp32.meta, tag))
    base = {k: v for k, v in fp32.meta.extra.items() if k in ("versions", "opset", "exporter")}
    meta = fp32.meta.replace(precision=precision, layout=layout, extra={**base, **extra})
    staged = work / path.name
    shutil.copyfile(src, staged)
    proto = onnx.load(str(staged))
    write_meta(proto, meta)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(staged))
    return Artifact("fp16" if precision == "fp16" else f"int8-{layout}", path, meta, False)


def _fp16(args: BudgetOptions, fp32: Artifact, calib: Any, held: Any, work: Path, progress: bool,
          log: Callable[[str], None]) -> tuple[list[Artifact], dict]:
    from calibration.graph import parse_keep

    space = Fp16Space(fp32, calib, parse_keep(args.keep_fp32, ()), work, args.max_float_layers, log)
    result = search(space, held.score, args.max_drop, progress, log)
    print_table(result, space.total_macs)
    if not result.finalists:
        raise unmet_budget(result, "FP16", "raise --max-drop, allow more FP32 layers (--max-float-layers N, "
                           f"now {space.cap} of {len(space.units)}), or deploy the FP32 artifact")
    win, why = choose(result.finalists, None, by="proxy")
    from export.precision import layout_name

    kept = space.forced + list(win.keep)
    extra = {"keep_fp32": kept, "kept_fp32_nodes": kept, "forced_fp32_by_range": space.by_range,
             "source_onnx_sha256": sha256_file(fp32.path),
             **_decision(args, win, _figures(win), layout_name(kept))}
    art = _stage(fp32, win.path, "fp16", layout_name(kept), budget_tag("fp16", None, args.max_drop), extra, work)
    facts = {"precision": "fp16", "result": result, "winner": win, "why": f"{why}; {explain(result, win)}",
             "rejected": [], "front": mark_front(result.candidates),
             "units": space.units, "total_macs": space.total_macs, "forced": space.forced, "cap": space.cap,
             "calibration": calib.describe()}
    return [art], facts
