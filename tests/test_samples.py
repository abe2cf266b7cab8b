"""The synthetic data generator: layout, determinism, classes, scale invariance, resume, video."""
from __future__ import annotations

import hashlib
import json

import cv2
import numpy as np
import pytest

from apps.cli import run_cli
from runtime.data import open_dataset
from runtime.errors import ToolkitError
from samples.dataset import generate_dataset, render_scene, sample_paths
from apps.generate import main
from samples.scene import BUILDING, CAR, EGO_VEHICLE, PERSON, POLE, ROAD, SIDEWALK, SIGN, SKY, VEGETATION
from samples.video import write_video

SIZE = (64, 128)


def _hashes(root):
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*.png"))}


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    summary = generate_dataset(root, SIZE, n_train=4, n_val=2, seed=3, workers=1, progress=False)
    return root, summary


def test_layout_and_reader(small_set):
    root, summary = small_set
    assert summary["written"] == 6 and summary["skipped"] == 0
    img, lab = sample_paths(root, "train", 0)
    assert img.relative_to(root).as_posix() == "leftImg8bit/train/synthville/synthville_000000_000019_leftImg8bit.png"
    assert lab.relative_to(root).as_posix() == "gtFine/train/synthville/synthville_000000_000019_gtFine_labelIds.png"
    assert sample_paths(root, "train", 1)[0].parent.name == "procburg"
    assert sample_paths(root, "val", 0)[0].parts[-3:-1] == ("val", "pixelstadt")
    assert len(list((root / "leftImg8bit").rglob("*.png"))) == 6 == len(list((root / "gtFine").rglob("*_labelIds.png")))
    assert len(list((root / "gtFine").rglob("*_gtFine_instanceIds.png"))) == 6
    ds = open_dataset(root, split="train")
    assert ds.kind == "cityscapes" and len(ds) == 4
    s = ds[0]
    assert s.image.shape == SIZE + (3,) and s.label.shape == SIZE
    raw = cv2.imread(str(ds.items[0].label), cv2.IMREAD_UNCHANGED)
    assert raw.dtype == np.uint8 and raw.ndim == 2
    assert set(np.unique(raw).tolist()) <= {0, EGO_VEHICLE, 7, 8, 11, 17, 20, 21, 22, 23, 24, 26}
    assert np.all(s.label[raw == EGO_VEHICLE] == 255) and np.all(s.label[raw == ROAD] == 0)


def test_same_seed_is_byte_identical_and_workers_do_not_matter(small_set, tmp_path):
    root, _ = small_set
    generate_dataset(tmp_path / "again", SIZE, n_train=4, n_val=2, seed=3, workers=2, progress=False)
    assert _hashes(tmp_path / "again") == _hashes(root)
    generate_dataset(tmp_path / "other", SIZE, n_train=4, n_val=2, seed=4, workers=1, progress=False)
    assert set(_hashes(tmp_path / "other").values()).isdisjoint(_hashes(root).values())


def test_scenes_have_street_classes_in_plausible_places():
    counts = np.zeros(256, np.int64)
    for i in range(6):
        rgb, lab = render_scene(np.random.default_rng([11, i]), 128, 256)
        assert rgb.dtype == np.uint8 and rgb.shape == (128, 256, 3) and lab.shape == (128, 256)
        counts += np.bincount(lab.ravel(), minlength=256)
        top, bottom = lab[: 20], lab[-45:]
        assert np.isin(top, [SKY, BUILDING, VEGETATION, POLE, SIGN]).mean() > 0.95
        assert (bottom == ROAD).mean() > 0.2 and (top == ROAD).sum() == 0
    present = {k for k in np.nonzero(counts)[0]}
    assert {ROAD, SIDEWALK, BUILDING, SKY, VEGETATION, CAR, PERSON, POLE, SIGN} <= present
    for k in (ROAD, SIDEWALK, BUILDING, SKY, CAR, POLE):
        assert counts[k] / counts.sum() > 0.005, k


def test_same_scene_at_any_resolution():
    small_rgb, small = render_scene(np.random.default_rng(5), 64, 128)
    big_rgb, big = render_scene(np.random.default_rng(5), 256, 512)
    down = big[2::4, 2::4]
    assert (down == small).mean() > 0.9
    diff = np.abs(cv2.resize(big_rgb, (128, 64), interpolation=cv2.INTER_AREA).astype(int) - small_rgb).mean()
    assert diff < 20


def test_classes_are_textured_and_noisy():
    rgb, lab = render_scene(np.random.default_rng(2), 128, 256)
    road = rgb[lab == ROAD].astype(float)
    assert road.std(axis=0).mean() > 3          # not a flat colour
    assert len(np.unique(rgb.reshape(-1, 3), axis=0)) > 2000


def test_rerun_skips_and_refuses_a_different_dataset(small_set, tmp_path, capsys):
    root, _ = small_set
    again = generate_dataset(root, SIZE, n_train=4, n_val=2, seed=3, workers=1, progress=False)
    assert again["written"] == 0 and again["skipped"] == 6
    manifest = json.loads((root / "synth_manifest.json").read_text())
    assert manifest["complete"] and manifest["seed"] == 3 and "road" in manifest["pixel_fractions"]
    with pytest.raises(ToolkitError, match="different synthetic dataset.*seed 3 -> 9"):
        generate_dataset(root, SIZE, n_train=4, n_val=2, seed=9, workers=1, progress=False)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.txt").write_text("precious")
    assert run_cli(main, ["--out", str(tmp_path / "mine"), "--size", "64x128", "--train", "1", "--val", "0"]) == 2
    assert "not empty" in capsys.readouterr().err
    assert (tmp_path / "mine" / "thesis.txt").read_text() == "precious"
    assert not (tmp_path / "mine" / "leftImg8bit").exists()
    shrink = tmp_path / "shrink"
    generate_dataset(shrink, SIZE, n_train=3, n_val=1, seed=1, workers=1, progress=False)
    generate_dataset(shrink, SIZE, n_train=2, n_val=1, seed=1, workers=1, progress=False, force=True)
    assert len(list((shrink / "gtFine").rglob("*.png"))) == 2 * 3      # labelIds + instanceIds


def test_cli_prints_summary_and_frequencies(tmp_path, capsys):
    assert main(["--out", str(tmp_path / "d"), "--size", "64x128", "--train", "2", "--val", "1",
                 "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert "2 train + 1 val" in out and "road" in out and "%" in out


def test_video_reopens_with_all_frames(tmp_path):
    path = write_video(tmp_path / "drive.mp4", seed=1, n_frames=12, fps=10.0, size=(64, 128))
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened() and int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 12
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame.astype(np.float32))
    cap.release()
    assert len(frames) == 12 and frames[0].shape == (64, 128, 3)
    step = np.mean([np.abs(a - b).mean() for a, b in zip(frames, frames[1:])])
    assert 0.5 < step < 40                       # moving, but smoothly
    assert not list(tmp_path.glob(".*tmp*"))
    with pytest.raises(ToolkitError, match=".mp4 or .avi"):
        write_video(tmp_path / "drive.gif", n_frames=2, size=(64, 128))


def test_instance_ids_follow_cityscapes_and_the_label_map(small_set):
    """*_gtFine_instanceIds.png: 16-bit, labelId*1000+k for persons and cars, the labelId elsewhere."""
    from samples.dataset import instance_path

    root, _ = small_set
    cars = persons = 0
    for i in range(4):
        lab_path = sample_paths(root, "train", i)[1]
        lab = cv2.imread(str(lab_path), cv2.IMREAD_UNCHANGED)
        inst = cv2.imread(str(instance_path(lab_path)), cv2.IMREAD_UNCHANGED)
        assert inst.dtype == np.uint16 and inst.shape == lab.shape
        objects = inst >= 1000
        np.testing.assert_array_equal(np.where(objects, inst // 1000, inst), lab)     # same classes, pixel for pixel
        assert set(np.unique(lab[objects]).tolist()) <= {24, 26}                    # only classes with instances
        assert not np.any(np.isin(lab, (24, 26)) & ~objects)
        for cls in (24, 26):
            ks = sorted({int(v) % 1000 for v in np.unique(inst[lab == cls])})
            assert ks == list(range(len(ks)))                                        # k counts from 0 per class
        cars += len(np.unique(inst[lab == 26]))
        persons += len(np.unique(inst[lab == 24]))
    assert cars >= 4 and persons >= 1
