"""NonLocalNet: dilated ResNet + non-local head, key-for-key the released sssegmentation model."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.nonlocal_block import NonLocal2d
from models.resnet import ResNetV1c


def conv_bn_relu(cin: int, cout: int, k: int = 3) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


def classifier(cin: int, width: int, num_classes: int) -> nn.Sequential:
    """3x3 conv-BN-ReLU, Dropout2d(0.1), 1x1 conv to logits (indices 0,1,2,3,4 as released)."""
    return nn.Sequential(*conv_bn_relu(cin, width), nn.Dropout2d(0.1), nn.Conv2d(width, num_classes, 1))


class NonLocalNet(nn.Module):
    """Eval: ``model(x)`` -> logits at the input size. Train: ``{"out": ..., "aux": ...}``."""

    def __init__(self, num_classes: int, depth: int = 50, output_stride: int = 8, stem_width: int = 64,
                 base_width: int = 64, head_channels: int = 512, aux_channels: int = 512,
                 nl_reduction: int = 2, layers: tuple[int, ...] | None = None) -> None:
        super().__init__()
        self.backbone_net = ResNetV1c(depth, output_stride, stem_width, base_width, layers)
        c3, c4 = self.backbone_net.out_channels
        self.conv_before_nl = nn.Sequential(*conv_bn_relu(c4, head_channels))
        self.nl_block = NonLocal2d(head_channels, nl_reduction)
        self.conv_after_nl = nn.Sequential(*conv_bn_relu(head_channels, head_channels))
        self.decoder = classifier(c4 + head_channels, head_channels, num_classes)
        self.auxiliary_decoder = classifier(c3, aux_channels, num_classes)
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor):
        size = x.shape[2:]
        c3, c4 = self.backbone_net(x)
        feats = self.conv_after_nl(self.nl_block(self.conv_before_nl(c4)))
        logits = self.decoder(torch.cat([c4, feats], dim=1))
        out = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        if not self.training:
            return out
        aux = F.interpolate(self.auxiliary_decoder(c3), size=size, mode="bilinear", align_corners=False)
        return {"out": out, "aux": aux}
