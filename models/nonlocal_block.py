"""Embedded-Gaussian non-local block (Wang et al. 2018) in the sssegmentation/mmcv layout."""
from __future__ import annotations

import torch
from torch import nn


class NonLocal2d(nn.Module):
    """y = softmax(theta^T phi / sqrt(C')) g;  out = x + BN(conv_out(y)).

    Export-friendly: no data-dependent control flow; the affinity is a MatMul + Softmax + MatMul
    that precision tools can find by op type.
    """

    def __init__(self, channels: int, reduction: int = 2) -> None:
        super().__init__()
        inner = channels // reduction
        self.inter_channels = inner
        self.scale = inner ** -0.5
        self.g = nn.Sequential(nn.Conv2d(channels, inner, 1))
        self.theta = nn.Sequential(nn.Conv2d(channels, inner, 1))
        self.phi = nn.Sequential(nn.Conv2d(channels, inner, 1))
        self.conv_out = nn.Sequential(nn.Conv2d(inner, channels, 1, bias=False), nn.BatchNorm2d(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g_x = self.g(x).flatten(2).transpose(1, 2)           # (N, HW, C')
        theta_x = self.theta(x).flatten(2).transpose(1, 2)   # (N, HW, C')
        phi_x = self.phi(x).flatten(2)                       # (N, C', HW)
        affinity = torch.softmax(torch.matmul(theta_x, phi_x) * self.scale, dim=-1)
        y = torch.matmul(affinity, g_x).transpose(1, 2)      # (N, C', HW)
        y = y.reshape(x.shape[0], self.inter_channels, x.shape[2], x.shape[3])
        return x + self.conv_out(y)
