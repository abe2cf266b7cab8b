"""Image/label reading and the dataset readers: mappings, layouts, bad files, skip mode."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from runtime.data import (CITYSCAPES_LABEL_TO_TRAIN, ade20k_lut, cityscapes_lut, detect_kind,
                          list_images, open_dataset)
from runtime.errors import ToolkitError
from runtime.preprocess import denormalize, normalize, probe_image, read_image, read_label, to_rgb

MEAN, STD = (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)


def _png(path, array):
    """Write any image file (the extension picks the format), creating folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), array)
    return path


def _truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def _rgb(h=8, w=12, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


# -- preprocess -------------------------------------------------------------------------------------
def test_read_image_converts_bgr_to_rgb(tmp_path):
    rgb = _rgb()
    p = _png(tmp_path / "a.png", rgb[..., ::-1])
    out = read_image(p)
    assert out.dtype == np.uint8 and out.shape == (8, 12, 3)
    np.testing.assert_array_equal(out, rgb)
    assert probe_image(p) == (8, 12)


def test_read_image_gray_rgba_16bit(tmp_path):
    gray = np.arange(96, dtype=np.uint8).reshape(8, 12)
    np.testing.assert_array_equal(read_image(_png(tmp_path / "g.png", gray)), np.repeat(gray[..., None], 3, 2))
    bgra = np.zeros((4, 4, 4), np.uint8)
    bgra[..., 0], bgra[..., 2], bgra[..., 3] = 10, 200, 7
    assert read_image(_png(tmp_path / "rgba.png", bgra))[0, 0].tolist() == [200, 0, 10]
    g16 = np.array([[0, 257, 65535, 32896]], np.uint16)
    out = read_image(_png(tmp_path / "g16.png", g16))
    assert out.dtype == np.uint8 and out[0, :, 0].tolist() == [0, 1, 255, 128]
    c16 = np.zeros((2, 2, 3), np.uint16)
    c16[..., 2] = 65535                                  # BGR: red channel full
    assert read_image(_png(tmp_path / "c16.png", c16))[0, 0].tolist() == [255, 0, 0]


@pytest.mark.parametrize("ext", [".png", ".jpg"])
def test_truncated_or_garbage_image_names_the_file(tmp_path, ext):
    p = tmp_path / f"img{ext}"
    assert cv2.imwrite(str(p), _rgb(64, 64))
    _truncate(p)
    with pytest.raises(ToolkitError, match=f"img{ext}.*truncated"):
        read_image(p)
    junk = tmp_path / f"junk{ext}"
    junk.write_bytes(b"not an image at all")
    with pytest.raises(ToolkitError, match=f"junk{ext}"):
        read_image(junk)
    with pytest.raises(ToolkitError, match="not found"):
        read_image(tmp_path / "missing.png")


def test_read_label_variants(tmp_path):
    lab = np.array([[0, 7, 255], [26, 8, 1]], np.uint8)
    np.testing.assert_array_equal(read_label(_png(tmp_path / "l.png", lab)), lab)
    np.testing.assert_array_equal(read_label(_png(tmp_path / "l16.png", lab.astype(np.uint16))), lab)
    with pytest.raises(ToolkitError, match="above 255"):
        read_label(_png(tmp_path / "big.png", np.array([[300]], np.uint16)))
    same = np.repeat(lab[..., None], 3, 2)
    np.testing.assert_array_equal(read_label(_png(tmp_path / "same.png", same)), lab)
    colour = _rgb(2, 3)
    with pytest.raises(ToolkitError, match="colour"):
        read_label(_png(tmp_path / "colour.png", colour))
    palette = [(0, 0, 0), (128, 0, 0), (0, 128, 0)]
    coded = np.array([[(0, 0, 0), (128, 0, 0)], [(0, 128, 0), (224, 224, 192)]], np.uint8)
    p = _png(tmp_path / "pal.png", coded[..., ::-1])
    np.testing.assert_array_equal(read_label(p, palette=palette), [[0, 1], [2, 255]])


def test_normalize_and_to_rgb():
    img = _rgb()
    chw = normalize(img, MEAN, STD)
    assert chw.shape == (3, 8, 12) and chw.dtype == np.float32
    assert chw[0, 0, 0] == pytest.approx((img[0, 0, 0] - MEAN[0]) / STD[0], rel=1e-6)
    np.testing.assert_array_equal(denormalize(chw, MEAN, STD), img)
    np.testing.assert_array_equal(to_rgb(img[..., ::-1]), img)
    np.testing.assert_array_equal(to_rgb(img, order="rgb"), img)
    with pytest.raises(ToolkitError):
        normalize(img[..., 0], MEAN, STD)


def test_runtime_modules_import_without_torch_or_cv2():
    code = ("import sys; import runtime.data, runtime.metrics, runtime.preprocess; "
            "sys.exit(1 if {'torch', 'cv2'} & set(sys.modules) else 0)")
    assert subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1]).returncode == 0


# -- label mappings ---------------------------------------------------------------------------------
def test_cityscapes_and_ade_luts():
    lut = cityscapes_lut()
    assert [lut[i] for i in (7, 8, 11, 17, 20, 21, 23, 24, 26, 33)] == [0, 1, 2, 5, 7, 8, 10, 11, 13, 18]
    others = [i for i in range(256) if i not in CITYSCAPES_LABEL_TO_TRAIN]
    assert set(lut[others].tolist()) == {255}
    assert sorted(lut[list(CITYSCAPES_LABEL_TO_TRAIN)].tolist()) == list(range(19))
    ade = ade20k_lut()
    assert ade[0] == 255 and ade[1] == 0 and ade[150] == 149 and ade[255] == 255


def _cityscapes(root, n=3, h=8, w=12, split="val"):
    for i in range(n):
        stem = f"town_000000_{i:06d}"
        _png(root / "leftImg8bit" / split / "town" / f"{stem}_leftImg8bit.png", _rgb(h, w, i))
        lab = np.full((h, w), 7, np.uint8)
        lab[0, :4] = [0, 1, 26, 33]                          # unlabeled, ego vehicle, car, bicycle
        _png(root / "gtFine" / split / "town" / f"{stem}_gtFine_labelIds.png", lab)
    return root


def test_cityscapes_reader(tmp_path):
    root = _cityscapes(tmp_path / "cs")
    ds = open_dataset(root, split="val")
    assert ds.kind == "cityscapes" and len(ds) == 3 and ds.num_classes == 19 and ds.ignore_index == 255
    assert ds.class_names[0] == "road" and ds.skipped == 0
    s = ds[1]
    assert s.name == "town/town_000000_000001" and s.image_path.endswith("town_000000_000001_leftImg8bit.png")
    np.testing.assert_array_equal(s.image, _rgb(8, 12, 1)[..., ::-1])
    assert s.label[0, :5].tolist() == [255, 255, 13, 18, 0]
    assert len(open_dataset(root, split="val", limit=2)) == 2
    assert [x.name for x in open_dataset(root, split="val", limit=2)] == [ds[0].name, ds[1].name]


def test_cityscapes_ids_that_are_not_label_ids_are_refused(tmp_path):
    root = _cityscapes(tmp_path / "cs", n=2)
    gt = root / "gtFine" / "val" / "town" / "town_000000_000001_gtFine_labelIds.png"
    lab = np.full((8, 12), 7, np.uint8)
    lab[2:4] = np.arange(40, 64, dtype=np.uint8).reshape(2, 12)          # ids 40..63: no Cityscapes labelId
    _png(gt, lab)
    with pytest.raises(ToolkitError, match=r"town_000000_000001_gtFine_labelIds.png holds ids that are not "
                                           r"Cityscapes labelIds; expected 0..33; found ids 40, 41, .*\.\.\."):
        list(open_dataset(root, split="val"))
    skip = open_dataset(root, split="val", on_error="skip")
    assert len(skip) == 1 and skip.skipped == 1 and "not Cityscapes labelIds" in skip.skipped_files[0][1]


def test_cityscapes_folder_of_train_ids_is_named_and_accepted_only_when_asked(tmp_path):
    root = _cityscapes(tmp_path / "cs", n=2)
    labels = sorted((root / "gtFine").rglob("*_gtFine_labelIds.png"))
    expected = [open_dataset(root, split="val")[i].label for i in range(2)]
    for path, train in zip(labels, expected):
        _png(path, train)                                             # trainIds (0..18, 255) in labelIds files
    with pytest.raises(ToolkitError, match="not Cityscapes labelIds.*found ids 255 with the rest in 0..18: the "
                                           "folder looks like trainIds.*--label-ids trainIds"):
        open_dataset(root, split="val")[0]
    ds = open_dataset(root, split="val", label_ids="trainIds")
    for i in range(2):
        np.testing.assert_array_equal(ds[i].label, expected[i])
    _png(labels[0], np.full((8, 12), 26, np.uint8))                   # a real labelId (car) in trainIds mode
    with pytest.raises(ToolkitError, match="not Cityscapes trainIds.*found ids 26"):
        ds[0]
    with pytest.raises(ToolkitError, match="only apply to Cityscapes"):
        open_dataset(tmp_path / "cs" / "leftImg8bit", split="val", kind="folder", label_ids="trainIds")
    with pytest.raises(ToolkitError, match="looks like trainIds") as info:   # a command without --label-ids
        open_dataset(root, split="val", label_ids_flag=None)[1]
    assert "--" not in str(info.value) and "createLabelImgs" in str(info.value)


def test_voc_reader_aug_labels_and_list_formats(tmp_path):
    base = tmp_path / "VOCdevkit" / "VOC2012"
    label = np.tile(np.array([0, 15, 255, 20], np.uint8).repeat(3), (8, 1))          # (8, 12)
    for name in ("2007_000032", "2007_000033"):
        _png(base / "JPEGImages" / f"{name}.jpg", _rgb())
        _png(base / "SegmentationClassAug" / f"{name}.png", label)
    (base / "ImageSets" / "Segmentation").mkdir(parents=True)
    (base / "ImageSets" / "Segmentation" / "val.txt").write_text("2007_000033\n2007_000032\n")
    (base / "ImageSets" / "SegmentationAug").mkdir(parents=True)
    (base / "ImageSets" / "SegmentationAug" / "train_aug.txt").write_text(
        "/JPEGImages/2007_000032.jpg /SegmentationClassAug/2007_000032.png\n")
    assert detect_kind(tmp_path) == "voc"
    ds = open_dataset(tmp_path, split="val")
    assert ds.kind == "voc" and ds.num_classes == 21 and [s.name for s in ds] == ["2007_000032", "2007_000033"]
    assert ds[0].label[0, ::3].tolist() == [0, 15, 255, 20]
    assert len(open_dataset(tmp_path, split="train_aug")) == 1
    _png(base / "SegmentationClassAug" / "2007_000033.png", np.full((8, 12), 21, np.uint8))
    with pytest.raises(ToolkitError, match="2007_000033.png.*cannot have.*21"):
        open_dataset(tmp_path, split="val")[1]


def test_ade20k_reduce_zero_label(tmp_path):
    base = tmp_path / "ADEChallengeData2016"
    _png(base / "images" / "validation" / "ADE_val_1.jpg", _rgb())
    _png(base / "annotations" / "validation" / "ADE_val_1.png",
         np.tile(np.array([0, 1, 150, 3], np.uint8).repeat(3), (8, 1)))
    ds = open_dataset(tmp_path, split="val")
    assert ds.kind == "ade20k" and ds.num_classes == 150
    assert ds[0].label[0, ::3].tolist() == [255, 0, 149, 2]
    _png(base / "annotations" / "validation" / "ADE_val_1.png", np.full((8, 12), 151, np.uint8))
    with pytest.raises(ToolkitError, match="151"):
        ds[0]


def test_folder_reader_and_empty_dataset(tmp_path):
    _png(tmp_path / "imgs" / "b.png", _rgb())
    _png(tmp_path / "imgs" / "sub" / "a.jpg", _rgb())
    (tmp_path / "imgs" / "notes.txt").write_text("x")
    ds = open_dataset(tmp_path / "imgs")
    assert ds.kind == "folder" and [s.name for s in ds] == ["b", "sub/a"] and ds[0].label is None
    assert len(list_images(tmp_path / "imgs")) == 2
    (tmp_path / "empty").mkdir()
    with pytest.raises(ToolkitError, match="no images found.*leftImg8bit.*JPEGImages"):
        open_dataset(tmp_path / "empty")
    with pytest.raises(ToolkitError, match="not found"):
        open_dataset(tmp_path / "nope")


def test_bad_files_raise_naming_the_file_and_skip_counts(tmp_path):
    root = _cityscapes(tmp_path / "cs", n=5)
    gt = root / "gtFine" / "val" / "town"
    img = root / "leftImg8bit" / "val" / "town"
    (gt / "town_000000_000001_gtFine_labelIds.png").unlink()                       # missing label
    _png(gt / "town_000000_000002_gtFine_labelIds.png", np.full((8, 11), 7, np.uint8))   # wrong size
    _truncate(img / "town_000000_000003_leftImg8bit.png")                          # truncated image
    with pytest.raises(ToolkitError, match="town_000000_000001_gtFine_labelIds.png"):
        open_dataset(root)
    ds = open_dataset(root, limit=1)                                              # the bad ones are not opened
    assert len(ds) == 1
    skip = open_dataset(root, on_error="skip")
    assert [s.name.split("_")[-1] for s in skip] == ["000000", "000004"]
    assert skip.skipped == 3
    reasons = " ".join(w for _, w in skip.skipped_files)
    assert "000002_gtFine_labelIds.png does not match its image size" in reasons and "truncated" in reasons
    assert len(open_dataset(root, on_error="skip", limit=1)) == 1


def test_bad_files_found_at_read_time_in_raise_mode(tmp_path):
    root = _cityscapes(tmp_path / "cs", n=2)
    _png(root / "gtFine" / "val" / "town" / "town_000000_000000_gtFine_labelIds.png", np.full((8, 11), 7, np.uint8))
    _truncate(root / "leftImg8bit" / "val" / "town" / "town_000000_000001_leftImg8bit.png")
    ds = open_dataset(root)                       # opening only checks that the files exist
    with pytest.raises(ToolkitError, match="000000_gtFine_labelIds.png.*8x12.*8x11"):
        ds[0]
    with pytest.raises(ToolkitError, match="000001_leftImg8bit.png is truncated"):
        ds[1]
    with pytest.raises(ToolkitError):
        list(ds)
    ds.on_error = "skip"                          # iteration in skip mode drops and counts them
    assert list(ds) == [] and ds.skipped == 2
