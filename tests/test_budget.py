"""``--max-drop``: accuracy-budgeted precision search (INT8 and FP16) on the tiny variant.

The data set has disjoint train (calibration) and val (evaluation) frames; its val ground truth is
the seeded tiny model's own tiled prediction, so the reference mIoU is 100 % and every drop is the
artifact's own error."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from runtime.errors import ToolkitError

from tests.conftest import seeded_tiny, VARIANT, write_self_labelled


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from runtime.backends import open_backend
    from samples.dataset import render_scene

    d = tmp_path_factory.mktemp("budget")
    model, ckpt = seeded_tiny(d, 3)
    with open_backend(VARIANT, model=model) as ref:
        for split, n in (("train", 6), ("val", 3)):
            frames = [render_scene(np.random.default_rng([7, len(split), i]), 96, 200)[0] for i in range(n)]
            write_self_labelled(d / "data", split, frames, ref)
    return {"dir": d, "ckpt": str(ckpt), "data": str(d / "data")}


def to_trt(setup, out: Path, *extra: str) -> int:
    from apps.to_trt import main

    argv = ["--model", VARIANT, "--checkpoint", setup["ckpt"], "--calib-data", setup["data"],
            "--calib-images", "6", "--out", str(out), "--backend", "onnxruntime", "--quiet", *extra]
    return main(argv)



# -- the search on a synthetic space (no ONNX: exact expectations) ------------------------------
class FakeSpace:
    """Units u0..u9 (10 MACs each); drop(method, k) = base[method] - step * k, timings from ``ms``."""

    def __init__(self, base: dict, step: float = 1.0, cap: int = 10) -> None:
        from calibration.budget import Unit

        self.methods = list(base)
        self.base, self.step, self.cap = base, step, cap
        self.units = [Unit(f"u{i}", (f"n{i}",), 10.0) for i in range(10)]
        self.built: list[tuple[str, int]] = []
        self.ranked: list[str] = []

    def ranking(self, method):
        self.ranked.append(method)
        return self.units

    def max_keep(self, method):
        return self.cap

    def build(self, method, keep):
        self.built.append((method, len(keep)))
        return Path(f"{method}-{len(keep)}")

    def score(self, path):
        method, k = str(path).rsplit("-", 1)
        drop = self.base[method] - self.step * int(k)
        return {"miou": 0.8 - drop / 100, "drop": drop, "agreement": 0.99, "ms_per_tile": 10.0 + int(k)}


def test_search_finds_the_smallest_passing_float_set_per_method():
    from export.budget.search import explain, search

    space = FakeSpace({"entropy": 5.5, "max": 9.5})      # entropy passes (<= 0.5) at k=5, max at k=9
    result = search(space, space.score, 0.5, progress=False, log=lambda *a: None)
    finals = {c.method: c.k for c in result.finalists}
    assert finals == {"entropy": 5}                          # max k=9 would keep more float: skipped
    assert ("entropy", 6) in space.built and ("entropy", 3) not in space.built   # gallop 1,2,4,8, bisect 6,5
    # max: k = 1, 2, 4 could still be cheaper than entropy's 5 units; k = 8 cannot and is skipped unbuilt
    assert [k for m, k in space.built if m == "max"] == [0, 1, 2, 4] and len(space.built) == 11   # not 20
    skipped = [c for c in result.candidates if c.passed is None]
    assert [(c.method, c.k) for c in skipped] == [("max", 8)] and "keeps at least" in skipped[0].note
    assert "closest: entropy, 4 float, drop +1.500 > 0.5" in explain(result, result.finalists[0])
    tighter = search(FakeSpace({"entropy": 5.5}), FakeSpace({"entropy": 5.5}).score, 0.1, False, print)
    assert tighter.finalists[0].k == 6 > 5                    # a tighter budget keeps more units in float


def test_no_sensitivity_needed_when_nothing_kept_float_passes():
    from export.budget.search import search

    space = FakeSpace({"percentile": 0.2, "entropy": 0.7})
    result = search(space, space.score, 0.5, progress=False, log=lambda *a: None)
    assert [(c.method, c.k) for c in result.finalists] == [("percentile", 0)]
    assert space.ranked == []                        # no sensitivity measured: no float set can be cheaper
    assert [(c.method, c.k) for c in result.candidates] == [("percentile", 0), ("entropy", 0)]


def test_unmet_budget_names_the_best_candidate():
    from export.budget.search import search, unmet_budget

    space = FakeSpace({"max": 9.0}, cap=3)
    result = search(space, space.score, 0.5, progress=False, log=lambda *a: None)
    assert not result.finalists and result.best_drop().k == 3
    err = unmet_budget(result, "INT8", "raise --max-drop")
    assert isinstance(err, ToolkitError)
    assert "max, 3 float" in str(err) and "drop +6.000" in str(err) and "nothing was written" in str(err)


def test_choose_fastest_then_fewer_float_macs_on_a_tie():
    from export.budget.search import Candidate, choose

    a, b, c = (Candidate("a", ("u0",), 10.0, Path("a"), drop=0.1), Candidate("b", (), 0.0, Path("b"), drop=0.3),
               Candidate("c", ("u0", "u1"), 20.0, Path("c"), drop=0.0))
    win, why = choose([a, b, c], lambda paths: [10.0, 10.2, 8.0])
    assert win is c and "fastest measured" in why
    win, _ = choose([a, b, c], lambda paths: [10.0, 10.2, 12.0])       # a and b tie within 3 %: fewer MACs
    assert win is b
    d, e = (Candidate("d", (), 0.0, Path("d"), drop=-0.5, agreement=0.90),
            Candidate("e", (), 0.0, Path("e"), drop=0.1, agreement=0.95))
    assert choose([d, e], lambda paths: [10.0, 10.1])[0] is e      # same cost: the more faithful one, not luck
    win, why = choose([a, c], None, by="proxy")
    assert win is a and "proxy" in why


def test_units_faster_in_float_are_kept_only_when_a_second_timing_confirms():
    from export.budget.search import faster_in_float

    ratios = {"attention": 0.92, "head": 0.93, "conv0": 0.95, "conv1": 0.965, "conv2": 1.10}
    second = {"attention": 0.91, "head": 0.94, "conv0": 1.01}       # conv0's first timing was luck
    asked: list[list[str]] = []

    def confirm(together):
        def time_it(names):
            asked.append(names)
            return second[names[0]] if len(names) == 1 else together
        return time_it

    out = faster_in_float(ratios, confirm(0.89))
    assert out.chosen == ["attention", "head"] and out.together == 0.89 and out.second == second
    assert asked == [["attention"], ["head"], ["conv0"], ["attention", "head"]]     # conv1: 3.5 % is no gain
    worse = faster_in_float(ratios, confirm(0.99))        # together not faster: only the fastest alone
    assert worse.chosen == ["attention"] and worse.together == 0.91
    second.update(attention=1.0, head=0.99)
    none = faster_in_float(ratios, confirm(0.5))
    assert none.chosen == [] and none.together is None and "not confirmed" in none.note
    asked.clear()
    slow = faster_in_float({"conv1": 0.965, "conv2": 1.1}, confirm(0.5))
    assert slow.chosen == [] and asked == [] and slow.note == "no unit is faster in float"


def test_speed_order_times_attention_and_head_first_then_the_smallest():
    from calibration.budget import Unit
    from export.budget.run import speed_order

    units = [Unit("big", ("a",), 9e9), Unit("head", ("h",), 5e8), Unit("small", ("b",), 1e6),
             Unit("attention", ("m",), 2e9), Unit("mid", ("c",), 1e8)]
    assert [u.name for u in speed_order(units)] == ["head", "attention", "small", "mid", "big"]


def test_paired_timer_gives_the_other_files_time_over_the_base(setup, tmp_path):
    """A file against itself is about 1; a file with ~6x the work of the base is well above 1 (never
    below: the ratio is other / base)."""
    import onnx
    from onnx import TensorProto, helper

    from export.budget.scoring import PairedTimer
    from tests.conftest import export_onnx

    base = export_onnx(Path(setup["ckpt"]), tmp_path / "base")
    heavy = onnx.load(str(base))                 # x + 0 * conv(conv(x)): the same output, far more work
    g, x = heavy.graph, heavy.graph.input[0].name
    rng = np.random.default_rng(0)
    g.initializer.extend([onnx.numpy_helper.from_array(rng.standard_normal((128, 3, 3, 3)).astype(np.float32), "w1"),
                          onnx.numpy_helper.from_array(rng.standard_normal((3, 128, 3, 3)).astype(np.float32), "w2"),
                          onnx.numpy_helper.from_array(np.zeros((), np.float32), "zero")])
    first = [n for n in g.node if x in n.input]
    extra = [helper.make_node("Conv", [x, "w1"], ["h1"], pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["h1", "w2"], ["h2"], pads=[1, 1, 1, 1]),
             helper.make_node("Mul", ["h2", "zero"], ["h3"]), helper.make_node("Add", [x, "h3"], ["x_same"])]
    for node in first:
        node.input[:] = ["x_same" if i == x else i for i in node.input]
    nodes = extra + list(g.node)
    del g.node[:]
    g.node.extend(nodes)
    heavy_path = tmp_path / "heavy.onnx"
    onnx.save(heavy, str(heavy_path))
    tiles = rng.standard_normal((4, 3, 64, 128)).astype(np.float32)
    with PairedTimer(base, tiles, threads=1) as timer:
        same, slower = timer.ratio(base), timer.ratio(heavy_path)
    assert 0.5 < same < 2.0 and slower > 1.5 * same


def test_fp16_range_forces_producer_and_readers():
    import onnx
    from onnx import TensorProto, helper

    from calibration.budget import fp16_ranking, layer_units

    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], name="c1"),
             helper.make_node("Mul", ["a", "s"], ["b"], name="big"),
             helper.make_node("Relu", ["b"], ["c"], name="reader"),
             helper.make_node("Conv", ["c", "w2"], ["y"], name="c2")]
    inits = [helper.make_tensor(n, TensorProto.FLOAT, d, [0.1] * int(np.prod(d)))
             for n, d in (("w1", (4, 3, 1, 1)), ("w2", (2, 4, 1, 1)), ("s", ()))]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, (1, 3, 4, 4))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, (1, 2, 4, 4))], inits)
    model = helper.make_model(graph)
    peaks = {"a": 100.0, "b": 7e4, "c": 7e4, "y": 3.0}
    forced, ranked = fp16_ranking(model, layer_units(model), peaks)
    assert forced == ["big", "reader", "c2"]            # b and c overflow FP16: producers and readers stay FP32
    assert [(u.name, u.score) for u in ranked] == [("c1", 100.0), ("head", 3.0)]   # by peak output
    assert [(u.name, u.macs) for u in layer_units(model)] == [("head", 2 * 16 * 4), ("c1", 4 * 16 * 3)]
    assert [u.name for u in layer_units(model, forced)] == ["c1"]        # forced nodes are no longer units


# -- the real thing on the tiny variant -------------------------------------------------------
def _tiny_trt_qdq(setup: dict, tmp_path: Path) -> tuple:
    """(FP32 model after preprocessing, its fully quantised TensorRT-layout model, calibration set)."""
    import onnx

    from calibration.qdq import compute_ranges, preprocess, quantize
    from export.pipeline import Artifact, CalibRequest, calibration_set
    from export.exporter import export_fp32, resolve_source

    path, meta, _ = export_fp32(resolve_source(VARIANT, setup["ckpt"], False), tmp_path, log=lambda *a: None)
    calib = calibration_set(Artifact("fp32", path, meta, False), CalibRequest(setup["data"], "max", None, 4), False)
    pre, ranges, full = tmp_path / "pre.onnx", tmp_path / "r.json", tmp_path / "full.onnx"
    preprocess(path, pre)
    compute_ranges(pre, calib, "max", None, ranges, 1, False)
    quantize(pre, ranges, full, "trt", "max", (), calib)
    return onnx.load(str(pre)), onnx.load(str(full)), calib


def test_strip_qdq_quantises_exactly_one_unit(setup, tmp_path):
    from calibration.budget import layer_units, output_error, run_model, strip_qdq
    from export.budget.run import sensitivity_tiles

    float_model, qdq, calib = _tiny_trt_qdq(setup, tmp_path)
    units = layer_units(float_model)
    assert [u.name for u in units[:2]] == ["attention", "head"] and len(units) > 10
    assert all(u.macs > 0 for u in units)
    tiles = sensitivity_tiles(calib, 2)
    ref = run_model(float_model, tiles)
    assert output_error(ref, run_model(strip_qdq(qdq, set()), tiles)) == (0.0, 0.0)   # all stripped = FP32
    one = strip_qdq(qdq, set(units[2].nodes))
    q_nodes = [n for n in one.graph.node if n.op_type == "QuantizeLinear"]
    assert len(q_nodes) == 2                                  # the activation and the weight of that one Conv
    assert output_error(ref, run_model(one, tiles))[0] > 0


def test_sensitivity_is_the_error_saved_by_keeping_one_unit_float(setup, tmp_path):
    """Leave-one-out: each score is the fall of the logit error when that unit alone is float in the
    fully quantised model, and the ranking follows it."""
    from calibration.budget import int8_sensitivity, layer_units, output_error, run_model, strip_qdq
    from export.budget.run import sensitivity_tiles

    float_model, full, calib = _tiny_trt_qdq(setup, tmp_path)
    units = layer_units(float_model)[:6]
    tiles = sensitivity_tiles(calib, 2)
    ranked, reused = int8_sensitivity(lambda: full, float_model, units, tiles, 1, tmp_path / "s.json", {"k": 1})
    assert not reused and sorted(u.name for u in ranked) == sorted(u.name for u in units)
    ref = run_model(float_model, tiles)
    all_err = output_error(ref, run_model(full, tiles))[0]
    compute = {n.name for n in full.graph.node if n.op_type not in ("QuantizeLinear", "DequantizeLinear")}
    for unit in (ranked[0], ranked[-1]):
        alone_float = output_error(ref, run_model(strip_qdq(full, compute - set(unit.nodes)), tiles))[0]
        assert abs(unit.score - (all_err - alone_float)) <= 1e-9 + 1e-6 * all_err
    assert [u.score for u in ranked] == sorted((u.score for u in ranked), reverse=True)
    assert ranked[0].score > 0 and "->" in ranked[0].detail
    again, reused = int8_sensitivity(lambda: pytest.fail("cache missed"), float_model, units, tiles, 1,
                                     tmp_path / "s.json", {"k": 1})
    assert reused and [u.name for u in again] == [u.name for u in ranked]


def test_flags_of_max_drop_are_checked(setup, tmp_path):
    base = ["--max-drop", "0.5"]
    cases = [(base, "exactly one of --int8 or --fp16"), (base + ["--int8", "--fp16"], "exactly one"),
             (["--int8", "--max-drop", "-1"], ">= 0"), (["--int8", "--max-drop", "inf"], ">= 0"),
             (["--int8", "--max-drop", "nan"], ">= 0"), (["--int8", "--max-drop", "int8=0.5"], ">= 0"),
             (["--int8", "--eval-data", "x"], "only apply to --max-drop"),
             (["--int8", "--max-drop", "1", "--int8-implicit"], "implicit"),
             (["--fp16", "--max-drop", "1", "--calib-method", "max"], "do not apply"),
             (["--int8", "--no-float-for-speed"], "only apply to --max-drop"),
             (["--fp16", "--max-drop", "1", "--no-float-for-speed"], "do not apply")]
    for extra, message in cases:
        with pytest.raises(ToolkitError, match=message):
            to_trt(setup, tmp_path, *extra)
    assert not list(tmp_path.iterdir())                       # refused before anything was written


@pytest.fixture(scope="module")
def int8_run(setup, tmp_path_factory):
    import export.budget.run

    out = tmp_path_factory.mktemp("int8_budget")
    lines: list[str] = []
    with pytest.MonkeyPatch.context() as mp:          # no time for timing: only the attention and head are timed
        mp.setattr(export.budget.run, "FLOAT_SPEED_SECONDS", 0)
        code = _logged(lambda: to_trt(setup, out, "--int8", "--max-drop", "30", "--calib-method", "max,percentile"),
                       lines)
    return {"out": out, "code": code, "lines": lines}


def _logged(fn, lines):
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = fn()
    lines.extend(buf.getvalue().splitlines())
    return code


def test_int8_budget_writes_both_layouts_with_the_decision(setup, int8_run):
    from runtime.artifact import read_onnx_meta

    out = int8_run["out"]
    assert int8_run["code"] == 0
    report = json.loads((out / "budget_int8_maxdrop30.json").read_text())
    assert (out / "budget_int8_maxdrop30.md").read_text().startswith("# Precision search: INT8 within 30")
    assert report["candidates"] and report["winner"]["passed"] and report["winner"]["drop"] <= 30
    assert "no shared file" in report["frames"] and report["machine"]["cpu"]
    speed = report["float_for_speed"]          # units timed float on this CPU; which win is the CPU's call
    assert sorted(speed["ratios"]) == ["attention", "head"] and all(r > 0 for r in speed["ratios"].values())
    assert "(timed 2 of " in speed["note"] and "the attention and head first" in speed["note"]
    assert set(speed["chosen"]) <= set(report["always_float"])
    for layout in ("ort", "trt"):
        meta = read_onnx_meta(out / f"{VARIANT}_64x128_int8_{layout}_maxdrop30.onnx")
        budget = meta.extra["budget"]
        assert meta.precision == "int8" and meta.layout == layout and budget["max_drop"] == 30.0
        assert budget["method"] == report["winner"]["method"] and budget["measured"]["drop"] <= 30
        assert meta.extra["float_for_speed"] == speed["chosen"] and set(speed["chosen"]) <= set(meta.extra["keep_float"])
    assert not [p for p in out.iterdir() if p.name.startswith(".budget.")]      # work folder removed


def test_int8_budget_holds_when_measured_by_runtime_evaluate(setup, int8_run, tmp_path):
    from apps.evaluate import main as evaluate

    art = int8_run["out"] / f"{VARIANT}_64x128_int8_ort_maxdrop30.onnx"
    code = evaluate(["--data", setup["data"], "--reference", VARIANT, "--checkpoint", setup["ckpt"], "--crop",
                     "64x128", "--artifacts", str(art), "--max-drop", "int8=30", "--out", str(tmp_path)])
    row = json.loads((tmp_path / "evaluate.json").read_text())["rows"][1]
    report = json.loads((int8_run["out"] / "budget_int8_maxdrop30.json").read_text())
    assert code == 0 and row["drop"] == pytest.approx(report["winner"]["drop"], abs=1e-6)


def test_unmet_budget_exits_nonzero_and_writes_no_artifact(setup, int8_run, capsys):
    from apps.to_trt import main
    from apps.cli import run_cli

    out = int8_run["out"]
    before = sorted(p.name for p in out.iterdir())
    argv = ["--model", VARIANT, "--checkpoint", setup["ckpt"], "--calib-data", setup["data"], "--calib-images", "6",
            "--out", str(out), "--backend", "onnxruntime", "--quiet", "--int8", "--max-drop", "0",
            "--calib-method", "max", "--max-float-layers", "1", "--no-float-for-speed"]
    assert run_cli(main, argv) == 2
    first = capsys.readouterr()
    assert "faster in float" not in first.out                                 # --no-float-for-speed: not timed
    assert first.err.startswith("error: no INT8 candidate stays within --max-drop 0") and "best candidate max" in first.err
    assert "reusing the PyTorch reference predictions" in first.out        # cached by the passing run before
    assert "measured, cached in sensitivity" in first.out
    assert sorted(p.name for p in out.iterdir()) == before                    # nothing new, nothing half-written
    assert run_cli(main, argv) == 2                                           # rerun: everything from the caches
    again = capsys.readouterr()
    assert "(reused sensitivity" in again.out and again.err == first.err


def test_evaluation_on_calibration_images_is_refused(setup, tmp_path):
    data = Path(setup["data"])
    twin = tmp_path / "twin"
    for kind in ("leftImg8bit", "gtFine"):                     # val split = a copy of the calibration (train) frames
        shutil.copytree(data / kind / "train", twin / kind / "val")
    with pytest.raises(ToolkitError, match="measured on calibration images"):
        to_trt(setup, tmp_path / "out", "--int8", "--max-drop", "1", "--eval-data", str(twin))
    assert not list((tmp_path / "out").glob("*maxdrop*"))


def test_fp16_budget(setup, tmp_path):
    from runtime.artifact import read_onnx_meta

    assert to_trt(setup, tmp_path, "--fp16", "--max-drop", "0.5") == 0
    meta = read_onnx_meta(tmp_path / f"{VARIANT}_64x128_fp16_maxdrop0.5.onnx")
    report = json.loads((tmp_path / "budget_fp16_maxdrop0.5.json").read_text())
    assert meta.precision == "fp16" and meta.extra["budget"]["measured"]["drop"] <= 0.5
    assert report["winner"]["passed"] and report["precision"] == "fp16"


# -- interruptions: a real SIGKILL mid-search and mid-placement ----------------------------------
def _killed_budget_run(setup, int8_run, tmp_path: Path, patch: str) -> Path:
    """A copy of the int8 run's FP32 ONNX and caches; a budget run on it in a subprocess, SIGKILLed
    where ``patch`` calls ``pause(MARKER)``. Returns the output folder."""
    import signal

    from test_fileio import PAUSE, kill_at_marker

    out = tmp_path / "out"
    shutil.copytree(int8_run["out"] / "calibration", out / "calibration")
    shutil.copy(int8_run["out"] / f"{VARIANT}_64x128.onnx", out)
    argv = ["--model", VARIANT, "--checkpoint", setup["ckpt"], "--calib-data", setup["data"], "--calib-images", "6",
            "--out", str(out), "--backend", "onnxruntime", "--quiet", "--int8", "--max-drop", "30",
            "--calib-method", "max,percentile"]
    code = (PAUSE + f"MARKER = {str(tmp_path / 'marker')!r}\nimport export.budget.run\n"
            "export.budget.run.FLOAT_SPEED_SECONDS = 0\n" + patch + f"from export.to_trt import main\nmain({argv!r})\n")
    assert kill_at_marker(code, tmp_path / "marker") == -signal.SIGKILL
    return out


def _unmet(setup, out: Path) -> None:
    """A later budget run in the same folder (one that meets nothing and writes nothing)."""
    with pytest.raises(ToolkitError, match="no INT8 candidate"):
        to_trt(setup, out, "--int8", "--max-drop", "0", "--calib-method", "max", "--max-float-layers", "1",
               "--no-float-for-speed")


def test_sigkill_mid_search_leaves_no_work_folder_after_the_next_run(setup, int8_run, tmp_path):
    patch = ("import export.budget.scoring as be\n"
             "def score(self, path):\n"
             "    pause(MARKER)\n"
             "be.HeldOut.score = score\n")
    out = _killed_budget_run(setup, int8_run, tmp_path, patch)
    work = [p for p in out.iterdir() if p.name.startswith(".budget.")]
    assert len(work) == 1 and list(work[0].glob("*.onnx"))               # killed with candidates built
    with pytest.MonkeyPatch.context() as mp:
        import export.budget.run

        mp.setattr(export.budget.run, "FLOAT_SPEED_SECONDS", 0)
        assert to_trt(setup, out, "--int8", "--max-drop", "30", "--calib-method", "max,percentile") == 0
    assert not [p for p in out.iterdir() if p.name.startswith(".")]       # no work folder, no journal


def test_sigkill_after_the_first_budgeted_file_leaves_no_incomplete_set(setup, int8_run, tmp_path):
    patch = ("import os\nfrom pathlib import Path\nreal = os.replace\n"
             "def replace(src, dst):\n"
             "    real(src, dst)\n"
             "    if Path(dst).name.endswith('_int8_ort_maxdrop30.onnx'):\n"
             "        pause(MARKER)\n"
             "os.replace = replace\n")
    out = _killed_budget_run(setup, int8_run, tmp_path, patch)
    assert (out / f"{VARIANT}_64x128_int8_ort_maxdrop30.onnx").is_file()   # killed right after it was placed
    _unmet(setup, out)
    assert not list(out.glob("*maxdrop30*")), "an incomplete set of budgeted files survived the next run"
    assert not [p for p in out.iterdir() if p.name.startswith(".")]       # no work folder, no journal


def test_train_id_ground_truth_names_a_flag_to_trt_has(setup, int8_run, tmp_path, capsys):
    import cv2

    from apps.to_trt import build_parser, main
    from apps.cli import run_cli
    from runtime.data import cityscapes_lut

    data = tmp_path / "trainids"
    shutil.copytree(Path(setup["data"]) / "leftImg8bit" / "val", data / "leftImg8bit" / "val")
    shutil.copytree(Path(setup["data"]) / "gtFine" / "val", data / "gtFine" / "val")
    for gt in data.rglob("*_gtFine_labelIds.png"):        # labelIds -> trainIds in place, as a user might
        lab = cv2.imread(str(gt), cv2.IMREAD_UNCHANGED)
        lab[:2] = 1                                         # ego vehicle -> 255 (ignore) after the mapping
        cv2.imwrite(str(gt), cityscapes_lut()[lab])
    out = tmp_path / "out"
    shutil.copytree(int8_run["out"] / "calibration", out / "calibration")
    shutil.copy(int8_run["out"] / f"{VARIANT}_64x128.onnx", out)
    argv = ["--model", VARIANT, "--checkpoint", setup["ckpt"], "--calib-data", setup["data"], "--calib-images", "6",
            "--out", str(out), "--backend", "onnxruntime", "--quiet", "--int8", "--max-drop", "30",
            "--calib-method", "max", "--no-float-for-speed", "--eval-data", str(data)]
    assert run_cli(main, argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "looks like trainIds" in err
    flags = set(re.findall(r"--[a-z][a-z0-9-]+", err))
    known = {s for a in build_parser()._actions for s in a.option_strings}
    assert flags and flags <= known, f"names flags to_trt does not have: {flags - known}"
    assert run_cli(main, argv + ["--label-ids", "trainIds"]) == 0
    report = json.loads((out / "budget_int8_maxdrop30.json").read_text())
    assert report["reference"]["miou"] == pytest.approx(1.0)           # its own predictions, read as trainIds
    with pytest.raises(ToolkitError, match="--label-ids only apply to --max-drop"):
        main(argv[:argv.index("--int8")] + ["--int8", "--label-ids", "trainIds"])
