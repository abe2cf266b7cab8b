"""Dataset readers without torch (numpy + OpenCV): Cityscapes, VOC 2012 (+SBD aug), ADE20k, folders.

``open_dataset(root, split, kind="auto")`` returns a :class:`Dataset` whose items are
:class:`Sample` (uint8 RGB image, uint8 label in training ids with 255 = ignore, or None).
Cityscapes labels are labelIds (0..33, what ``*_gtFine_labelIds.png`` holds); a folder whose
labelIds files hold trainIds (0..18, 255) is read only with ``label_ids="trainIds"``.
A missing label file, a label whose size differs from its image, an unreadable or truncated file,
or label ids the dataset cannot contain raise :class:`ToolkitError` naming the file. With
``on_error="skip"`` such samples are checked when the dataset is opened (file presence, end
markers, header sizes, label decode) and left out; ``dataset.skipped`` counts them and
``dataset.skipped_files`` says why. No label is ever silently altered.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from runtime.errors import ToolkitError
from runtime.preprocess import probe_image, read_image, read_label

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
KINDS = ("cityscapes", "voc", "ade20k", "folder")
LABEL_IDS = ("labelIds", "trainIds")     # what Cityscapes label files hold
IGNORE = 255

# Cityscapes labelId -> trainId (every other id -> ignore).
CITYSCAPES_LABEL_TO_TRAIN = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9,
                             23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
LAYOUTS = {
    "cityscapes": "leftImg8bit/{split}/<city>/*_leftImg8bit.png + gtFine/{split}/<city>/*_gtFine_labelIds.png",
    "voc": "VOC2012/{JPEGImages, SegmentationClassAug, ImageSets/Segmentation/{split}.txt}",
    "ade20k": "ADEChallengeData2016/{images,annotations}/{training,validation}/",
    "folder": "a directory of .png/.jpg images (searched recursively)",
}


# Cityscapes trainId (0..18) -> labelId, for files the official cityscapesScripts evaluator reads.
CITYSCAPES_TRAIN_TO_LABEL = (7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33)


def train_to_label_ids(pred: np.ndarray) -> np.ndarray:
    """Map a trainId prediction to Cityscapes labelIds (anything else -> 0, 'unlabeled')."""
    lut = np.zeros(256, dtype=np.uint8)
    lut[: len(CITYSCAPES_TRAIN_TO_LABEL)] = CITYSCAPES_TRAIN_TO_LABEL
    return lut[pred.astype(np.uint8)]


def cityscapes_lut() -> np.ndarray:
    lut = np.full(256, IGNORE, np.uint8)
    for label_id, train_id in CITYSCAPES_LABEL_TO_TRAIN.items():
        lut[label_id] = train_id
    return lut


def ade20k_lut() -> np.ndarray:
    """Reduce zero label: 0 (other) -> 255, 1..150 -> 0..149."""
    lut = np.full(256, IGNORE, np.uint8)
    lut[1:151] = np.arange(150, dtype=np.uint8)
    return lut


def _valid_ids(ids: Sequence[int]) -> np.ndarray:
    valid = np.zeros(256, bool)
    valid[list(ids)] = True
    return valid


@dataclass
class Sample:
    image: np.ndarray                 # (H, W, 3) uint8 RGB
    label: np.ndarray | None          # (H, W) uint8 training ids, 255 = ignore; None without labels
    name: str
    image_path: str


@dataclass(frozen=True)
class Item:
    image: Path
    label: Path | None
    name: str


class Dataset:
    """Indexable list of samples of one split; decoding happens in ``__getitem__``."""

    def __init__(self, kind: str, root: Path, split: str, items: list[Item], on_error: str = "raise",
                 skipped: list[tuple[str, str]] | None = None, label_ids: str = "labelIds",
                 label_ids_flag: str | None = "--label-ids") -> None:
        self.kind, self.root, self.split, self.items = kind, root, split, items
        self.on_error = on_error
        self.skipped_files = list(skipped or [])
        self.ignore_index = IGNORE
        self.label_ids = label_ids
        self.label_ids_flag = label_ids_flag       # the calling command's flag for label_ids (None: it has none)
        self.num_classes, self.class_names, self.palette = _class_info(kind)
        train_ids = kind == "cityscapes" and label_ids == "trainIds"
        self.lut = None if train_ids else {"cityscapes": cityscapes_lut(), "ade20k": ade20k_lut()}.get(kind)
        self.valid = {"voc": _valid_ids([*range(21), IGNORE]), "ade20k": _valid_ids(range(151)),
                      "cityscapes": _valid_ids([*range(19), IGNORE] if train_ids else range(34))}.get(kind)

    @property
    def skipped(self) -> int:
        return len(self.skipped_files)

    @property
    def image_paths(self) -> list[str]:
        return [str(it.image) for it in self.items]

    def __len__(self) -> int:
        return len(self.items)

    def __repr__(self) -> str:
        return (f"Dataset(kind={self.kind!r}, root='{self.root}', split={self.split!r}, "
                f"samples={len(self)}, skipped={self.skipped})")

    def __getitem__(self, index: int) -> Sample:
        if not -len(self) <= index < len(self):
            raise IndexError(f"sample {index} out of range ({len(self)} samples)")
        item = self.items[index]
        image = read_image(item.image)
        label = None if item.label is None else self.read_label(item.label, image.shape[:2])
        return Sample(image=image, label=label, name=item.name, image_path=str(item.image))

    def __iter__(self) -> Iterator[Sample]:
        """All samples; with on_error="skip" a sample that still fails to decode is skipped and counted."""
        for i in range(len(self)):
            try:
                yield self[i]
            except ToolkitError as exc:
                if self.on_error != "skip":
                    raise
                self.skipped_files.append((str(self.items[i].image), exc.message))

    def read_label(self, path: Path, shape: tuple[int, int] | None = None) -> np.ndarray:
        """Decode a label file into training ids (checks size and id range)."""
        palette = self.palette if self.kind == "voc" else None
        raw = read_label(path, palette=palette)
        if shape is not None and raw.shape != tuple(shape):
            raise ToolkitError(f"label file {path} does not match its image size",
                               expected=f"{shape[0]}x{shape[1]}", found=f"{raw.shape[0]}x{raw.shape[1]}",
                               fix="the label must have exactly the size of its image")
        if self.valid is not None:
            present = np.bincount(raw.ravel(), minlength=256) > 0
            bad = np.nonzero(present & ~self.valid)[0]
            if bad.size:
                raise self._bad_ids(path, present, bad)
        return self.lut[raw] if self.lut is not None else raw

    def _bad_ids(self, path: Path, present: np.ndarray, bad: np.ndarray) -> ToolkitError:
        found = f"ids {', '.join(str(int(b)) for b in bad[:8])}{' ...' if bad.size > 8 else ''}"
        if self.kind != "cityscapes":
            return ToolkitError(f"label file {path} holds ids this {self.kind} dataset cannot have", found=found,
                                fix="check that the annotation set matches the dataset kind")
        ids = np.nonzero(present)[0]
        flag = self.label_ids_flag                 # None: the calling command has no such flag; name none
        if self.label_ids == "trainIds":
            return ToolkitError(f"label file {path} holds ids that are not Cityscapes trainIds",
                                expected="0..18 and 255 (label_ids='trainIds'" + (f" / {flag} trainIds)" if flag else ")"),
                                found=found, fix=(f"drop {flag} trainIds" if flag else "use label_ids='labelIds'")
                                + " if the files hold labelIds (0..33)")
        looks_train = bool(ids.max() == IGNORE and ids[:-1].size and ids[:-1].max() <= 18)
        regenerate = "regenerate them with cityscapesScripts' createLabelImgs"
        return ToolkitError(f"label file {path} holds ids that are not Cityscapes labelIds", expected="0..33",
                            found=found + (" with the rest in 0..18: the folder looks like trainIds"
                                           if looks_train else ""),
                            fix=f"pass {flag} trainIds (label_ids='trainIds') if the gtFine files "
                                f"hold trainIds; otherwise {regenerate}" if flag else
                                f"this command reads Cityscapes labelIds (0..33) only: {regenerate}")


def _class_info(kind: str) -> tuple[int | None, tuple[str, ...], tuple]:
    if kind == "folder":
        return None, (), ()
    from runtime.zoo import DATASETS        # torch-free variant table

    info = DATASETS[kind]
    return info.num_classes, tuple(info.class_names), tuple(info.palette)


# -- listing ----------------------------------------------------------------------------------------
def list_images(root: str | os.PathLike) -> list[Path]:
    """Image files under ``root`` (recursive, sorted, hidden files skipped)."""
    root = Path(root)
    if root.is_file():
        return [root] if root.suffix.lower() in IMAGE_EXTENSIONS else []
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(root).parts))


def _list_cityscapes(root: Path, split: str) -> list[Item]:
    img_dir = root / "leftImg8bit" / split
    if not img_dir.is_dir():
        found = sorted(p.name for p in (root / "leftImg8bit").iterdir() if p.is_dir())
        raise ToolkitError(f"no split {split!r} in Cityscapes dataset {root}", expected=f"{img_dir}/",
                           found=f"splits {found}" if found else "no split folders",
                           fix="pass an existing --split")
    items = []
    for img in sorted(img_dir.rglob("*_leftImg8bit.png")):
        rel = img.relative_to(img_dir)
        stem = img.name[: -len("_leftImg8bit.png")]
        gt_dir = root / "gtFine" / split / rel.parent
        label = gt_dir / f"{stem}_gtFine_labelIds.png"
        items.append(Item(img, label, str(rel.parent / stem)))
    return items


def _voc_base(root: Path) -> Path:
    for cand in (root, root / "VOC2012", root / "VOCdevkit" / "VOC2012"):
        if (cand / "JPEGImages").is_dir():
            return cand
    return root


def _list_voc(root: Path, split: str) -> list[Item]:
    base = _voc_base(root)
    names = [split] + (["train_aug", "trainaug"] if split in ("aug", "train_aug", "trainaug") else [])
    lists = [d / f"{n}.txt" for n in names for d in (base / "ImageSets" / "Segmentation",
                                                     base / "ImageSets" / "SegmentationAug", base)]
    list_file = next((p for p in lists if p.is_file()), None)
    if list_file is None:
        raise ToolkitError(f"no image list for split {split!r} in VOC dataset {base}",
                           expected=" or ".join(str(p) for p in lists[:2]), fix="pass an existing --split")
    label_dir = next((base / d for d in ("SegmentationClassAug", "SegmentationClass") if (base / d).is_dir()),
                     base / "SegmentationClassAug")
    items = []
    for line in list_file.read_text().splitlines():
        if not line.strip():
            continue
        name = Path(line.split()[0]).stem                # "2007_000032" or "/JPEGImages/2007_000032.jpg ..."
        items.append(Item(base / "JPEGImages" / f"{name}.jpg", label_dir / f"{name}.png", name))
    return sorted(items, key=lambda it: it.name)


def _list_ade20k(root: Path, split: str) -> list[Item]:
    base = root / "ADEChallengeData2016" if (root / "ADEChallengeData2016").is_dir() else root
    sub = {"train": "training", "val": "validation"}.get(split, split)
    img_dir = base / "images" / sub
    if not img_dir.is_dir():
        raise ToolkitError(f"no split {split!r} in ADE20k dataset {base}", expected=f"{img_dir}/",
                           fix="use --split train or val")
    return [Item(p, base / "annotations" / sub / f"{p.stem}.png", p.stem)
            for p in sorted(img_dir.iterdir()) if p.suffix.lower() in (".jpg", ".jpeg", ".png")]


def detect_kind(root: str | os.PathLike) -> str:
    """Guess the dataset layout of ``root`` (see :data:`LAYOUTS`)."""
    root = Path(root)
    if (root / "leftImg8bit").is_dir():
        return "cityscapes"
    if (root / "ADEChallengeData2016").is_dir() or ((root / "images" / "training").is_dir()
                                                    or (root / "images" / "validation").is_dir()):
        return "ade20k"
    if (_voc_base(root) / "JPEGImages").is_dir():
        return "voc"
    return "folder"


def _check_item(ds: Dataset, item: Item) -> str | None:
    """Why ``item`` cannot be used (cheap checks for on_error="skip"), or None."""
    try:
        shape = probe_image(item.image)
        if item.label is not None:
            if shape is None:
                shape = read_image(item.image).shape[:2]
            ds.read_label(item.label, shape)
    except ToolkitError as exc:
        return exc.message
    return None


def open_dataset(root: str | os.PathLike, split: str = "val", kind: str = "auto", limit: int | None = None,
                 on_error: str = "raise", label_ids: str = "labelIds",
                 label_ids_flag: str | None = "--label-ids") -> Dataset:
    """Open one split of a dataset. ``limit`` keeps the first N samples in sorted order.

    ``label_ids``: what Cityscapes label files hold, "labelIds" (the official files) or "trainIds";
    ``label_ids_flag``: the calling command's flag that sets it, named in errors (None: it has none).
    """
    root_path = Path(root)
    if not root_path.exists():
        raise ToolkitError(f"dataset directory not found: {root}", fix="check --data")
    if on_error not in ("raise", "skip"):
        raise ToolkitError(f"bad on_error {on_error!r}", expected="'raise' or 'skip'")
    auto = kind == "auto"
    if auto:
        kind = detect_kind(root_path)
    if kind not in KINDS:
        raise ToolkitError(f"unknown dataset kind {kind!r}", expected=", ".join(("auto",) + KINDS))
    if limit is not None and limit < 1:
        raise ToolkitError(f"bad limit {limit}", expected="a positive number of samples")
    if label_ids not in LABEL_IDS:
        raise ToolkitError(f"bad label_ids {label_ids!r}", expected=" or ".join(LABEL_IDS))
    if label_ids != "labelIds" and kind != "cityscapes":
        raise ToolkitError(f"label ids {label_ids} only apply to Cityscapes, not to a {kind} dataset ({root})",
                           fix="drop --label-ids")
    if kind == "folder":
        items = [Item(p, None, str(p.relative_to(root_path).with_suffix("")) if root_path.is_dir() else p.stem)
                 for p in list_images(root_path)]
    else:
        items = {"cityscapes": _list_cityscapes, "voc": _list_voc, "ade20k": _list_ade20k}[kind](root_path, split)
    if not items:
        layouts = LAYOUTS.values() if auto and kind == "folder" else [LAYOUTS[kind]]
        raise ToolkitError(f"no images found in {root} (kind {'auto -> ' if auto else ''}{kind}, split {split})",
                           expected=" or ".join(x.replace("{split}", split) for x in layouts),
                           fix="check --data / --split")
    ds = Dataset(kind, root_path, split, [], on_error, label_ids=label_ids, label_ids_flag=label_ids_flag)
    ds.items = _select(ds, items, limit)
    if not ds.items:
        raise ToolkitError(f"every sample of {root} (split {split}) was unusable and skipped",
                           found=f"{ds.skipped} skipped, first: {ds.skipped_files[0][0]}: {ds.skipped_files[0][1]}")
    return ds


def _select(ds: Dataset, items: list[Item], limit: int | None) -> list[Item]:
    """Apply ``limit``; in raise mode fail on a missing file, in skip mode drop unusable samples."""
    if ds.on_error == "raise":
        chosen = items[:limit] if limit else items
        for it in chosen:
            for path, what in ((it.image, "image"), (it.label, "label")):
                if path is not None and not path.is_file():
                    raise ToolkitError(f"{what} file missing for sample {it.name}: {path}",
                                       fix="restore the file, or open the dataset with on_error='skip'")
        return chosen
    kept: list[Item] = []
    for it in items:
        why = _check_item(ds, it)
        if why is None:
            kept.append(it)
            if limit and len(kept) == limit:
                break
        else:
            ds.skipped_files.append((str(it.image), why))
    return kept
