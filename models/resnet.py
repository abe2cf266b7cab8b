"""Dilated ResNet with a deep stem (OpenMMLab "ResNet-V1c"), as used by the published NonLocalNet.

Key names and shapes match the released checkpoints (``backbone_net.stem.0.weight`` ...).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

# depth -> (block type, blocks per stage)
ARCH = {18: ("basic", (2, 2, 2, 2)), 34: ("basic", (3, 4, 6, 3)),
        50: ("bottleneck", (3, 4, 6, 3)), 101: ("bottleneck", (3, 4, 23, 3))}
# output stride -> (stage strides, stage dilations)
STRIDES = {8: ((1, 2, 1, 1), (1, 1, 2, 4)), 16: ((1, 2, 2, 1), (1, 1, 1, 2)), 32: ((1, 2, 2, 2), (1, 1, 1, 1))}


def conv_bn(cin: int, cout: int, k: int, stride: int = 1, dilation: int = 1) -> list[nn.Module]:
    pad = dilation * (k // 2)
    return [nn.Conv2d(cin, cout, k, stride, pad, dilation, bias=False), nn.BatchNorm2d(cout)]


class BasicBlock(nn.Module):
    """3x3 (stride, dilation) -> 3x3, mmseg layout: the second conv is undilated."""

    expansion = 1

    def __init__(self, cin: int, width: int, stride: int = 1, dilation: int = 1,
                 downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1, self.bn1 = conv_bn(cin, width, 3, stride, dilation)
        self.conv2, self.bn2 = conv_bn(width, width, 3)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (stride, dilation) -> 1x1 (x4); the stride sits on the 3x3 conv."""

    expansion = 4

    def __init__(self, cin: int, width: int, stride: int = 1, dilation: int = 1,
                 downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1, self.bn1 = conv_bn(cin, width, 1)
        self.conv2, self.bn2 = conv_bn(width, width, 3, stride, dilation)
        self.conv3, self.bn3 = conv_bn(width, width * 4, 1)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNetV1c(nn.Module):
    """Deep-stem dilated ResNet returning (layer3, layer4) features."""

    def __init__(self, depth: int = 50, output_stride: int = 8, stem_width: int = 64,
                 base_width: int = 64, layers: Sequence[int] | None = None) -> None:
        super().__init__()
        kind, default_layers = ARCH[depth]
        block = Bottleneck if kind == "bottleneck" else BasicBlock
        strides, dilations = STRIDES[output_stride]
        half = stem_width // 2
        self.stem = nn.Sequential(
            *conv_bn(3, half, 3, stride=2), nn.ReLU(inplace=True),
            *conv_bn(half, half, 3), nn.ReLU(inplace=True),
            *conv_bn(half, stem_width, 3), nn.ReLU(inplace=True))
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        cin = stem_width
        for i, (n, s, d) in enumerate(zip(layers or default_layers, strides, dilations)):
            width = base_width * 2 ** i
            setattr(self, f"layer{i + 1}", self._make_stage(block, cin, width, n, s, d))
            cin = width * block.expansion
        self.out_channels = (cin // 2, cin)   # layer3, layer4
        self._init_weights()

    @staticmethod
    def _make_stage(block: type, cin: int, width: int, n: int, stride: int, dilation: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or cin != width * block.expansion:
            downsample = nn.Sequential(*conv_bn(cin, width * block.expansion, 1, stride))
        first_dilation = dilation // 2 if dilation > 1 else 1   # "contract dilation"
        blocks = [block(cin, width, stride, first_dilation, downsample)]
        blocks += [block(width * block.expansion, width, 1, dilation) for _ in range(n - 1)]
        return nn.Sequential(*blocks)

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.maxpool(self.stem(x))
        x = self.layer2(self.layer1(x))
        c3 = self.layer3(x)
        c4 = self.layer4(c3)
        return c3, c4
