"""Shake-Shake 26 2×Nd (Gastaldi 2017), CIFAR layout, "Shake-Shake-Image" regularisation.

depth 26 = 6·4 + 2: a 3×3 stem (16 channels) with BN, three stages of 4 residual blocks
(widths N, 2N, 4N; strides 1, 2, 2), then ReLU, global average pooling and a linear
classifier. Each block has two branches ReLU-conv3×3-BN-ReLU-conv3×3-BN mixed per example
with α ~ U(0,1) in the forward pass and an independent β ~ U(0,1) in the backward pass; at
eval the mix is 0.5/0.5. When the shape changes the shortcut is Gastaldi's: ReLU, two
strided 1×1 convs (the second on the input shifted by one pixel), concatenated, then BN.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .init import init_resnet_weights


def shake_shake(a: Tensor, b: Tensor, training: bool) -> Tensor:
    """α·a + (1-α)·b forward, gradients weighted by β and 1-β; α, β drawn per example.

    The forward value is added as a detached correction to the β-mix, so autograd sees the
    β weights and no custom backward, host sync or data-dependent branch is needed.
    """
    if not training:
        return 0.5 * (a + b)
    shape = (a.shape[0],) + (1,) * (a.dim() - 1)
    alpha = torch.rand(shape, device=a.device, dtype=a.dtype)
    beta = torch.rand(shape, device=a.device, dtype=a.dtype)
    backward_mix = beta * a + (1 - beta) * b
    return backward_mix + ((alpha - beta) * (a - b)).detach()


def _branch(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.ReLU(),
        nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
        nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False),
        nn.BatchNorm2d(out_channels),
    )


class ShiftedShortcut(nn.Module):
    """Gastaldi's shortcut for a change of width/resolution: two half-width strided 1×1
    convs, the second one on the input shifted by one pixel so both pixel phases are seen."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.stride = stride
        self.conv1 = nn.Conv2d(in_channels, out_channels // 2, 1, bias=False)
        self.conv2 = nn.Conv2d(in_channels, out_channels - out_channels // 2, 1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(x)
        shifted = F.pad(x, (-1, 1, -1, 1))   # drop the first row/column, zero-fill the last
        path1 = self.conv1(x[:, :, ::self.stride, ::self.stride])
        path2 = self.conv2(shifted[:, :, ::self.stride, ::self.stride])
        return self.bn(torch.cat((path1, path2), dim=1))


class ShakeBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.branch1 = _branch(in_channels, out_channels, stride)
        self.branch2 = _branch(in_channels, out_channels, stride)
        same_shape = in_channels == out_channels and stride == 1
        self.shortcut = None if same_shape else ShiftedShortcut(in_channels, out_channels, stride)

    def forward(self, x: Tensor) -> Tensor:
        mixed = shake_shake(self.branch1(x), self.branch2(x), self.training)
        return mixed + (x if self.shortcut is None else self.shortcut(x))


class ShakeShakeResNet(nn.Module):
    def __init__(self, depth: int, base_width: int, num_classes: int):
        super().__init__()
        blocks_per_stage = (depth - 2) // 6
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        stages, in_channels = [], 16
        for width, stride in zip((base_width, 2 * base_width, 4 * base_width), (1, 2, 2)):
            blocks = []
            for i in range(blocks_per_stage):
                blocks.append(ShakeBlock(in_channels, width, stride if i == 0 else 1))
                in_channels = width
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.fc = nn.Linear(in_channels, num_classes)
        init_resnet_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        out = self.stages(self.bn1(self.conv1(x)))
        return self.fc(F.adaptive_avg_pool2d(F.relu(out), 1).flatten(1))
