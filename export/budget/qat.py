"""The ``--max-drop`` escalation: quantization-aware fine-tuning when no post-training candidate fits.

When every post-training (PTQ) candidate of ``--int8 --max-drop X`` is over budget and
``--qat-data DIR`` is given, the fastest layout the search considered (the best-calibrated method,
nothing float beyond the always-float set) is fine-tuned: its TensorRT-layout Q/DQ file is run by
PyTorch as :class:`models.qat.QuantGraph` (fake quantization exactly at the file's Q/DQ, scales from
the calibrated ranges) and trained with the toolkit's trainer (:mod:`models.trainer`: poly schedule,
augmentation, progress bar and projected time, Ctrl-C safe, resumable) on the train split of
``--qat-data``. The fine-tuned float weights go back into the FP32 graph, which is quantized again
with the same ranges and the same kept-float set into both layouts; they are scored on the same
held-out frames as every PTQ candidate (disjoint from the fine-tuning frames, checked) and must pass
the same gate and fusion check.

The training run lives in ``calibration/qat_<key>/`` next to the artifacts (key: the Q/DQ file's
bytes and the QAT settings): an interrupted run (Ctrl-C: exit 130, nothing written) resumes from its
``latest.pth`` when the same command runs again, and a finished one is reused.
"""
from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path
from typing import Any, Callable

from export.budget.options import BudgetOptions
from export.budget.search import Candidate
from export.exporter import digest
from runtime.errors import ToolkitError
from runtime.fileio import sha256_file

QAT_RECIPE = 2
INTERRUPTED = (130, 143)
# The gate scores tiles at the frames' own scale: fine-tune there (the recipe's 0.5-2.0 rescaling is for
# learning from scratch), with the trainer's loss, crop sampling, flips and photometric jitter.
QAT_RATIO = "0.75,1.25"


@dataclasses.dataclass
class QatRun:
    """What a QAT run produced: the candidate (ORT layout, scored), its TensorRT-layout twin's
    score and path, and the facts for the report."""

    cand: Candidate
    trt_path: Path
    trt: dict
    facts: dict


def qat_config(args: BudgetOptions, variant: str, crop: tuple[int, int], frame_hw: tuple[int, int], graph: Path,
               run_dir: Path, resume: bool) -> Any:
    """The trainer's config of the fine-tuning run: the training recipe (loss, poly schedule, SGD,
    augmentation) at the frames' own scale, FP32, no whole-image validation (the graph's crop is fixed).
    Frames load in this process (workers=0): a loader process forked from one that already ran ONNX
    Runtime and PyTorch thread pools (the search) can hang, as it did here."""
    from models.trainer import TrainConfig

    iters = args.qat_iters
    return TrainConfig(model=variant, data=args.qat_data, out=str(run_dir), crop=f"{crop[0]}x{crop[1]}",
                       base_size=f"{frame_hw[1]}x{frame_hw[0]}", ratio_range=QAT_RATIO, iters=iters,
                       batch_size=args.qat_batch, lr=args.qat_lr, min_lr=args.qat_lr / 100, amp="off", val_every=0,
                       save_every=max(1, min(50, iters // 4)), workers=0, resume="" if resume else None, qat=str(graph))


def check_qat_disjoint(held_paths: list[str], qat_root: str) -> tuple[str, tuple[int, int]]:
    """Refuse fine-tuning frames that are evaluation frames (by path or by content); returns a
    description and the (height, width) of the first fine-tuning frame."""
    from export.budget.scoring import shared_frames
    from runtime.data import open_dataset

    try:
        train = open_dataset(qat_root, split="train", label_ids_flag=None)
    except ToolkitError as exc:
        raise ToolkitError(f"--qat-data: {exc.message}", fix="pass a labelled dataset root with a train split") from None
    tuned = list(train.image_paths)
    shared = shared_frames(tuned, held_paths)
    if shared:
        raise ToolkitError("the fine-tuning frames include evaluation frames",
                           found=f"{len(shared)} of {len(tuned)} --qat-data train frames are held-out frames "
                                 f"(e.g. {shared[0]})",
                           fix="fine-tune on the train split and evaluate on held-out frames (--eval-data)")
    hw = tuple(int(v) for v in train[0].image.shape[:2])
    return f"{len(tuned)} train frames of {qat_root}, none of them an evaluation frame", hw


def run_qat(args: BudgetOptions, space: Any, base: Candidate, held: Any, work: Path,
            log: Callable[[str], None]) -> QatRun:
    """Fine-tune ``base``'s layout, re-quantize, score; raises KeyboardInterrupt when interrupted."""
    from models.trainer import read_training_checkpoint, train

    frames, frame_hw = check_qat_disjoint(held.dataset.image_paths, args.qat_data)
    graph = work / "qat_graph_trt.onnx"
    space.quantize(base.method, base.keep, "trt", graph)
    key = {"recipe": QAT_RECIPE, "graph": sha256_file(graph), "data": str(Path(args.qat_data).resolve()),
           "iters": args.qat_iters, "lr": args.qat_lr, "batch": args.qat_batch}
    run_dir = space.cdir / f"qat_{digest(key)[:16]}"
    run_dir.mkdir(parents=True, exist_ok=True)
    kept_graph = run_dir / "graph_trt.onnx"             # the run's own copy: resumes need it after work/ is gone
    if not kept_graph.is_file():
        shutil.copyfile(graph, kept_graph)
    latest = run_dir / "latest.pth"
    state = read_training_checkpoint(latest) if latest.is_file() else None
    done = bool(state and state.get("finished"))
    started = time.perf_counter()
    if done:
        log(f"QAT: reusing the finished fine-tuning run {run_dir} ({args.qat_iters} iterations)")
    else:
        where = f"resuming at iteration {state['cur_iter']}" if state else "starting"
        log(f"QAT: fine-tuning {base.method} (float: {', '.join(space.forced) or 'nothing'}) for {args.qat_iters} "
            f"iterations, batch {args.qat_batch}, lr {args.qat_lr:g}, on {frames}; {where} in {run_dir} "
            "(Ctrl-C stops and keeps the run: the same command resumes it)")
        config = qat_config(args, space.fp32.meta.variant, space.fp32.meta.crop, frame_hw, kept_graph, run_dir,
                            state is not None)
        config.check()
        code = train(config)
        if code in INTERRUPTED:
            raise KeyboardInterrupt(f"QAT interrupted; run the same command again to resume from {latest}")
        state = read_training_checkpoint(latest)
    seconds = time.perf_counter() - started
    tuned = _requantize(space, base, kept_graph, state, work)
    paths = {layout: tuned[layout] for layout in ("ort", "trt")}
    row, trt = held.score(paths["ort"]), held.score(paths["trt"])
    cand = Candidate(base.method, base.keep, base.float_macs, path=paths["ort"], kind="QAT")
    cand.miou, cand.drop, cand.agreement = row.get("miou"), row.get("drop"), row.get("agreement")
    cand.ms_per_tile, cand.note = row.get("ms_per_tile"), row.get("error") or ""
    ok = [r["drop"] is not None and not r.get("error") and r["drop"] <= args.max_drop + 1e-9 for r in (row, trt)]
    cand.passed = all(ok)
    if ok[0] and not ok[1]:
        cand.note = f"the TensorRT layout drops {trt['drop']:+.3f}"
    facts = {"iters": int(state["cur_iter"]), "lr": args.qat_lr, "batch": args.qat_batch, "ratio_range": QAT_RATIO,
             "data": frames, "run_dir": str(run_dir), "seconds": round(seconds, 1), "reused": done,
             "base": f"{base.method}, {base.k} float (drop {base.drop:+.3f} before fine-tuning)",
             "trt": {k: trt.get(k) for k in ("miou", "drop", "agreement", "error")}}
    log(f"QAT: {'reused' if done else f'{seconds / 60:.1f} min'}; drop {cand.drop:+.3f} (ONNX Runtime layout), "
        f"{trt['drop']:+.3f} (TensorRT layout) against {base.drop:+.3f} before fine-tuning")
    return QatRun(cand, paths["trt"], trt, facts)


def _requantize(space: Any, base: Candidate, graph: Path, state: dict, work: Path) -> dict[str, Path]:
    """The fine-tuned weights in the FP32 graph, quantized again into both layouts (same ranges, same keep)."""
    from models.checkpoints import read_state_dict
    from models.qat import QuantGraph, write_weights

    model = QuantGraph.from_file(graph)
    model.load_state_dict(read_state_dict(state))
    pre = work / "qat_fp32_pre.onnx"
    write_weights(space.pre, model.weights(), pre)
    out = {}
    for layout in ("ort", "trt"):
        out[layout] = work / f"qat_int8_{layout}.onnx"
        space.quantize(base.method, base.keep, layout, out[layout], pre=pre)
    return out
