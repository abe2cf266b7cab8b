"""The variant table: every published NonLocalNet plus edge and test variants, as data.

Torch-free, so the runtime and calibration can read class names, palettes and normalisation on a
device without PyTorch. ``get_variant`` fails with "did you mean" suggestions.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field

from runtime.errors import ToolkitError

RELEASE_URL = ("https://github.com/SegmentationBLWX/modelstore/releases/download/ssseg_nonlocalnet/"
               "nonlocalnet_resnet{depth}os{os}_{dataset}.pth")
MEAN = (123.675, 116.28, 103.53)
STD = (58.395, 57.12, 57.375)

CITYSCAPES_CLASSES = ("road", "sidewalk", "building", "wall", "fence", "pole", "traffic light",
                      "traffic sign", "vegetation", "terrain", "sky", "person", "rider", "car", "truck",
                      "bus", "train", "motorcycle", "bicycle")
CITYSCAPES_PALETTE = ((128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
                      (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
                      (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100),
                      (0, 80, 100), (0, 0, 230), (119, 11, 32))
VOC_CLASSES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
               "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
               "sheep", "sofa", "train", "tvmonitor")
ADE20K_CLASSES = tuple("""wall|building|sky|floor|tree|ceiling|road|bed|windowpane|grass|cabinet|sidewalk|
person|earth|door|table|mountain|plant|curtain|chair|car|water|painting|sofa|shelf|house|sea|mirror|rug|
field|armchair|seat|fence|desk|rock|wardrobe|lamp|bathtub|railing|cushion|base|box|column|signboard|
chest of drawers|counter|sand|sink|skyscraper|fireplace|refrigerator|grandstand|path|stairs|runway|case|
pool table|pillow|screen door|stairway|river|bridge|bookcase|blind|coffee table|toilet|flower|book|hill|
bench|countertop|stove|palm|kitchen island|computer|swivel chair|boat|bar|arcade machine|hovel|bus|towel|
light|truck|tower|chandelier|awning|streetlight|booth|television receiver|airplane|dirt track|apparel|pole|
land|bannister|escalator|ottoman|bottle|buffet|poster|stage|van|ship|fountain|conveyer belt|canopy|washer|
plaything|swimming pool|stool|barrel|basket|waterfall|tent|bag|minibike|cradle|oven|ball|food|step|tank|
trade name|microwave|pot|animal|bicycle|lake|dishwasher|screen|blanket|sculpture|hood|sconce|vase|
traffic light|tray|ashcan|fan|pier|crt screen|plate|monitor|bulletin board|shower|radiator|glass|clock|
flag""".replace("\n", "").split("|"))


def bit_palette(n: int) -> tuple[tuple[int, int, int], ...]:
    """The PASCAL VOC colour map (bit-interleaved class index); used for VOC and ADE20k."""
    colours = []
    for i in range(n):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        colours.append((r, g, b))
    return tuple(colours)


@dataclass(frozen=True)
class DatasetInfo:
    """What a dataset fixes for every model trained on it."""

    name: str
    num_classes: int
    class_names: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    crop: tuple[int, int]                  # training crop (H, W)
    base_size: tuple[int, int]             # train-time resize target (W, H) before random scaling
    mean: tuple[float, float, float] = MEAN
    std: tuple[float, float, float] = STD
    ignore_index: int = 255


DATASETS = {
    "cityscapes": DatasetInfo("cityscapes", 19, CITYSCAPES_CLASSES, CITYSCAPES_PALETTE, (512, 1024), (2048, 1024)),
    "ade20k": DatasetInfo("ade20k", 150, ADE20K_CLASSES, bit_palette(150), (512, 512), (2048, 512)),
    "voc": DatasetInfo("voc", 21, VOC_CLASSES, bit_palette(21), (512, 512), (2048, 512)),
}


@dataclass(frozen=True)
class Variant:
    """One buildable model: architecture, dataset facts, published result and release file."""

    name: str
    depth: int
    output_stride: int
    dataset: DatasetInfo
    published_miou: float | None = None    # percent, single scale, whole image
    checkpoint_url: str | None = None
    checkpoint_sha256: str | None = None
    stem_width: int = 64
    base_width: int = 64
    head_channels: int = 512
    aux_channels: int = 512
    nl_reduction: int = 2
    layers: tuple[int, ...] | None = None  # blocks per stage; None = the depth's standard layout
    crop_override: tuple[int, int] | None = field(default=None, repr=False)

    @property
    def crop(self) -> tuple[int, int]:
        return self.crop_override or self.dataset.crop

    @property
    def num_classes(self) -> int:
        return self.dataset.num_classes

    def model_kwargs(self) -> dict:
        """Constructor arguments of :class:`models.nonlocalnet.NonLocalNet`."""
        return dict(num_classes=self.num_classes, depth=self.depth, output_stride=self.output_stride,
                    stem_width=self.stem_width, base_width=self.base_width, head_channels=self.head_channels,
                    aux_channels=self.aux_channels, nl_reduction=self.nl_reduction, layers=self.layers)


PUBLISHED = {  # (depth, os) -> mIoU per dataset, spec/nonlocalnet.md
    (50, 8): {"cityscapes": 78.34, "ade20k": 42.15, "voc": 77.08},
    (50, 16): {"cityscapes": 77.18, "ade20k": 41.17, "voc": 76.17},
    (101, 8): {"cityscapes": 80.42, "ade20k": 44.49, "voc": 78.89},
    (101, 16): {"cityscapes": 78.48, "ade20k": 42.45, "voc": 77.48},
}


def _build_table() -> dict[str, Variant]:
    table: dict[str, Variant] = {}
    for (depth, os_), results in PUBLISHED.items():
        for ds, miou in results.items():
            name = f"r{depth}os{os_}_{ds}"
            url = RELEASE_URL.format(depth=depth, os=os_, dataset=ds)
            table[name] = Variant(name, depth, os_, DATASETS[ds], miou, url)
    for ds in DATASETS:   # edge variant: basic-block ResNet-18, not published. Head widths follow
        # mmsegmentation's r18-d8 configs (decode 128, auxiliary 64 channels); a 512-wide head made a
        # training step 1.4x slower and was less accurate on the sample set (README, Training).
        # os16 keeps layer4 at 1/16: 113 instead of 340 GFLOP per training step (batch 4 x 256x256,
        # torch.utils.flop_counter), but only 0.46-0.86x the os8 step time in FP32 on AVX2 kernels (a loaded
        # 2-core machine; BatchNorm and elementwise work do not shrink with layer4): README, Training.
        for os_ in (8, 16):
            name = f"r18os{os_}_{ds}"
            table[name] = Variant(name, 18, os_, DATASETS[ds], head_channels=128, aux_channels=64)
            # Slim edge / sample variant: half the widths (stem 16-16-32, stages 32..256 channels), about a
            # quarter of r18's FLOPs; r18w32os8_cityscapes is the quickstart's sample model (README, Training).
            slim = f"r18w32os{os_}_{ds}"
            table[slim] = Variant(slim, 18, os_, DATASETS[ds], stem_width=32, base_width=32, head_channels=128,
                                  aux_channels=64)
    table["tiny_cityscapes"] = Variant("tiny_cityscapes", 18, 8, DATASETS["cityscapes"], stem_width=16,
                                       base_width=8, head_channels=32, aux_channels=32,
                                       layers=(1, 1, 1, 1), crop_override=(64, 128))
    return table


VARIANTS: dict[str, Variant] = _build_table()


def list_variants() -> list[str]:
    return sorted(VARIANTS)


def get_variant(name: str) -> Variant:
    """Look a variant up by name; an unknown name fails with suggestions."""
    if name in VARIANTS:
        return VARIANTS[name]
    close = difflib.get_close_matches(name, VARIANTS, n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}?" if close else "see `python -m models.zoo` for the list"
    raise ToolkitError(f"unknown model variant {name!r}", fix=hint)
