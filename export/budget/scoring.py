"""Held-out scoring for ``--max-drop``: frames disjoint from the calibration images, the PyTorch
reference on them (cached), and each candidate's mIoU drop, agreement and CPU time per tile.

Scoring is the accuracy gate's own (``apps.evaluate.run_backend``: the runtime tiler, one
confusion matrix over the split); the reference label maps are cached as ``.npz`` keyed by the
weights, crop and frame list, so a rerun does not run PyTorch again.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from runtime.errors import ToolkitError
from runtime.fileio import atomic_open

REFERENCE_RECIPE = 1


def _file_hash(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def open_held_out(eval_data: str | None, calib_data: str, limit: int | None = None,
                  label_ids: str = "labelIds") -> tuple[Any, str]:
    """The labelled evaluation split: ``--eval-data`` (its val split), else the val split of
    ``--calib-data``; ``label_ids`` (``--label-ids``): what its Cityscapes label files hold.
    Returns ``(dataset, description)``."""
    from runtime.data import open_dataset

    root = eval_data or calib_data
    if not os.path.isdir(root):
        raise ToolkitError(f"--eval-data directory not found: {root}", fix="pass a dataset root with a val split")
    try:
        dataset = open_dataset(root, split="val", limit=limit, label_ids=label_ids, label_ids_flag="--label-ids")
    except ToolkitError as exc:
        raise ToolkitError(f"no labelled val split in {root} to measure the mIoU drop on", found=exc.message,
                           fix="pass --eval-data DIR: a Cityscapes/ADE20k/VOC root whose val split has labels "
                               "and no calibration image") from None
    if len(dataset) == 0 or dataset[0].label is None:
        raise ToolkitError(f"the val split of {root} has no labelled images",
                           fix="pass --eval-data DIR with ground-truth labels (the budget is an mIoU drop)")
    return dataset, f"{len(dataset)} labelled frames of the val split of {root}"


def shared_frames(frames: Sequence[Path], others: Sequence[Path]) -> list[Path]:
    """The files of ``frames`` that are also in ``others``, by resolved path or by content."""
    frames = [Path(p).resolve() for p in frames]
    others = {Path(p).resolve() for p in others}
    same_path = sorted(set(frames) & others)
    hashes = {_file_hash(p) for p in others if p.is_file()}
    return same_path + [p for p in frames if p not in same_path and _file_hash(p) in hashes]


def check_disjoint(dataset: Any, calib: Any, calib_root: str) -> str:
    """Refuse a held-out split that shares an image (by path or by content) with the calibration set."""
    eval_files = list(dataset.image_paths)
    shared = shared_frames(eval_files, [Path(calib_root, s) for s in set(calib.sources)])
    if shared:
        raise ToolkitError("the budget would be measured on calibration images",
                           found=f"{len(shared)} of the {len(eval_files)} evaluation frames are calibration "
                                 f"images (e.g. {shared[0]})",
                           fix="pass --eval-data DIR with held-out frames (e.g. the val split), or calibrate on "
                               "other images (--calib-data)")
    return (f"calibration: {len(calib)} tiles from {calib.n_images} images under {calib_root}; evaluation: "
            f"{len(eval_files)} other frames (no shared file, no shared content)")


class HeldOut:
    """Scores candidate artifacts against the PyTorch reference on the held-out frames."""

    def __init__(self, dataset: Any, variant: str, checkpoint: str | None, crop: Sequence[int],
                 cache_dir: Path, threads: int | None = None, log: Callable[[str], None] = print) -> None:
        from runtime.tiling import Tiler

        self.dataset, self.variant, self.checkpoint = dataset, variant, checkpoint
        self.crop, self.threads, self.log = tuple(int(c) for c in crop), threads, log
        self.tiler = Tiler(crop=None, stride=None, mode="tiled")
        self.refs, self.reference = self._reference(Path(cache_dir))
        self.scores_path = Path(cache_dir) / f"budget_scores_{self._key()[:16]}.json"
        self.reused = 0

    def _key(self) -> str:
        files = [[str(p), os.stat(p).st_size, os.stat(p).st_mtime_ns] for p in self.dataset.image_paths]
        ckpt = _file_hash(Path(self.checkpoint)) if self.checkpoint else "random-init"
        key = {"recipe": REFERENCE_RECIPE, "variant": self.variant, "weights": ckpt, "crop": list(self.crop),
               "files": files}
        if getattr(self.dataset, "label_ids", "labelIds") != "labelIds":   # the same files read as other ids
            key["label_ids"] = self.dataset.label_ids
        blob = json.dumps(key, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()

    def _reference(self, cache_dir: Path) -> tuple[list[np.ndarray], dict]:
        path = cache_dir / f"reference_{self._key()[:16]}.npz"
        if path.is_file():
            with np.load(path, allow_pickle=False) as data:
                n = int(data["count"])
                self.log(f"reusing the PyTorch reference predictions ({path.name})")
                return [data[f"p{i}"] for i in range(n)], json.loads(str(data["row"]))
        from runtime.evaluation import run_backend
        from runtime.backends import open_backend

        refs: list[np.ndarray] = []
        with open_backend(self.variant, backend="torch", checkpoint=self.checkpoint, crop=self.crop) as ref:
            row = run_backend(ref, self.dataset, self.tiler, None, cache_refs=refs)
        row = {k: row[k] for k in ("miou", "pixel_accuracy", "ms_per_tile", "per_class_iou")}
        with atomic_open(path, "wb") as f:
            np.savez(f, count=np.asarray(len(refs)), row=np.asarray(json.dumps(row)),
                     **{f"p{i}": r for i, r in enumerate(refs)})
        return refs, row

    def score(self, artifact: Path) -> dict[str, Any]:
        """mIoU, drop (points), agreement with the reference and ms per tile of one ONNX artifact.

        Scores are cached by the artifact's sha256 (same bytes, same frames: same figures), so a
        rerun of a search re-measures nothing but the finalists' speed."""
        from runtime.evaluation import run_backend
        from runtime.backends import open_backend

        sha = _file_hash(Path(artifact))
        cache = self._scores()
        if sha in cache:
            self.reused += 1
            return dict(cache[sha], reused=True)
        with open_backend(str(artifact), backend="onnxruntime", threads=self.threads) as backend:
            row = run_backend(backend, self.dataset, self.tiler, self.refs)
        drop = None if row["miou"] is None or row["error"] else (self.reference["miou"] - row["miou"]) * 100.0
        out = {"miou": row["miou"], "drop": drop, "agreement": row["agreement"],
               "ms_per_tile": row["ms_per_tile"], "error": row["error"]}
        cache[sha] = out
        with atomic_open(self.scores_path, "w") as f:
            json.dump(cache, f, indent=1)
        return out

    def _scores(self) -> dict[str, dict]:
        try:
            return json.loads(self.scores_path.read_text())
        except (OSError, ValueError):
            return {}


def _open_timed(path: Path, threads: int | None) -> Any:
    """An ONNX Runtime backend for timing (idle threads may spin, as in a benchmark)."""
    from runtime.backends import open_backend

    return open_backend(str(path), backend="onnxruntime", threads=threads, spin=True)


def _chunks(tiles: np.ndarray, batch: int) -> list[np.ndarray]:
    """``tiles`` as full static batches (a last partial batch is left out)."""
    return [np.ascontiguousarray(tiles[i:i + batch]) for i in range(0, len(tiles) - batch + 1, batch)]


def _block_minimums(backends: Sequence[Any], chunks: Sequence[np.ndarray], rounds: int, blocks: int) -> np.ndarray:
    """(blocks, len(backends)) seconds: per block, each backend's fastest call over ``rounds`` rounds
    of every chunk, the backends' order flipping every round."""
    out = np.full((blocks, len(backends)), np.inf)
    order = list(enumerate(backends))
    for block in range(blocks):
        for r in range(rounds):
            for i, backend in order[::(-1 if r % 2 else 1)]:
                for chunk in chunks:
                    t0 = time.perf_counter()
                    backend(chunk)
                    out[block, i] = min(out[block, i], time.perf_counter() - t0)
    return out


def time_per_tile(paths: Sequence[Path], tiles: np.ndarray, rounds: int = 3, blocks: int = 3,
                  threads: int | None = None) -> list[float]:
    """Ms per tile of each artifact in ONNX Runtime: per block, its fastest call over ``rounds``
    interleaved rounds of every tile; the median over ``blocks`` blocks (see :class:`PairedTimer`)."""
    from contextlib import ExitStack

    with ExitStack() as stack:
        backends = [stack.enter_context(_open_timed(p, threads)) for p in paths]
        batch = backends[0].input_shape[0]
        chunks = _chunks(tiles, batch)
        for b in backends:
            b(chunks[0])                                   # warm-up
        fastest = _block_minimums(backends, chunks, rounds, blocks)
    return [1e3 * float(t) / batch for t in np.median(fastest, axis=0)]


class PairedTimer:
    """Times ONNX Runtime artifacts against one base artifact, each as a ratio of CPU time.

    A block runs the base and the other artifact in alternating rounds (the order flipping every
    round), each round calling every tile once, and takes the ratio of the *fastest* call of each:
    interference from other work on a shared CPU only ever adds time. The ratio is the median over
    ``blocks`` blocks, since a whole block can still be disturbed (on machine B, busy neighbours:
    single blocks of one file against itself ranged 0.88-1.07, the median of three 0.99-1.03, and
    the median of per-round time ratios wandered by 10 %). Idle threads may spin, as in a benchmark.
    The base session stays open; each other artifact is opened, warmed up, timed and closed.
    """

    ROUND_SECONDS = 0.1        # a round calls as many tiles as fit in this (at least one, at most all)

    def __init__(self, base: Path, tiles: np.ndarray, rounds: int = 3, blocks: int = 3,
                 threads: int | None = None) -> None:
        self.base_path, self.tiles, self.rounds, self.blocks = Path(base), tiles, rounds, blocks
        self.threads = threads
        self._base: Any = None

    def __enter__(self) -> "PairedTimer":
        self._ctx = _open_timed(self.base_path, self.threads)
        self._base = self._ctx.__enter__()
        chunks = _chunks(self.tiles, self._base.input_shape[0])
        self._base(chunks[0])                                            # warm-up
        t0 = time.perf_counter()
        self._base(chunks[0])
        self.call_s = time.perf_counter() - t0
        self.chunks = chunks[:max(1, min(len(chunks), int(self.ROUND_SECONDS / max(self.call_s, 1e-6)) + 1))]
        return self

    def seconds_per_ratio(self, rounds: int | None = None) -> float:
        """About how long one :meth:`ratio` takes (for planning a series)."""
        return 2 * self.blocks * (rounds or self.rounds) * len(self.chunks) * self.call_s

    def __exit__(self, *exc: Any) -> None:
        self._ctx.__exit__(*exc)

    def ratio(self, path: Path, rounds: int | None = None) -> float:
        """Median over blocks of (fastest call of ``path``) / (fastest call of the base)."""
        with _open_timed(path, self.threads) as other:
            other(self.chunks[0])                                        # warm-up
            fastest = _block_minimums([other, self._base], self.chunks, rounds or self.rounds, self.blocks)
        return float(np.median(fastest[:, 0] / fastest[:, 1]))
