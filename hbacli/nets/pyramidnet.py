"""PyramidNet with bottleneck blocks (Han et al. 2017) and ShakeDrop (Yamada et al. 2018),
CIFAR layout, as used by AutoAugment/PBA/HBA: depth 272, widening α = 200.

depth = 9n + 2: a 3×3 stem (16 channels) with BN, then 3n bottleneck blocks whose width
grows additively by α/(3n) per block (the output of a block is 4× its width), stride 2 at
the first block of stages 2 and 3, then BN-ReLU, global average pooling and a linear
classifier. A block is BN-conv1×1-BN-ReLU-conv3×3-BN-ReLU-conv1×1-BN → ShakeDrop, added to
a parameter-free shortcut (2×2 average pooling when downsampling, zero channels appended).
Block l of L = 3n drops (shakes) its branch with probability p_l = 0.5 · l / L.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ..errors import HbaError
from .init import init_resnet_weights

FINAL_DROP_PROBABILITY = 0.5   # p_L of the last block (ShakeDrop paper, AutoAugment setting)


def shake_drop(x: Tensor, drop_probability: float, training: bool) -> Tensor:
    """ShakeDrop per example: with probability 1-p keep the branch; otherwise multiply it by
    α ~ U(-1,1) in the forward pass and by β ~ U(0,1) in the backward pass. Eval: (1-p)·x.

    The forward multiplier enters as a detached correction to the backward one, so there is
    no custom backward, host sync or data-dependent branch (graph capture safe).
    """
    if not training:
        return (1.0 - drop_probability) * x
    shape = (x.shape[0],) + (1,) * (x.dim() - 1)
    keep = torch.rand(shape, device=x.device, dtype=x.dtype) >= drop_probability
    keep = keep.to(x.dtype)
    alpha = torch.rand(shape, device=x.device, dtype=x.dtype) * 2 - 1
    beta = torch.rand(shape, device=x.device, dtype=x.dtype)
    forward_gain = keep + (1 - keep) * alpha
    backward_gain = keep + (1 - keep) * beta
    return backward_gain * x + ((forward_gain - backward_gain) * x).detach()


class ShakeDrop(nn.Module):
    def __init__(self, drop_probability: float):
        super().__init__()
        self.drop_probability = drop_probability

    def forward(self, x: Tensor) -> Tensor:
        return shake_drop(x, self.drop_probability, self.training)

    def extra_repr(self) -> str:
        return f"drop_probability={self.drop_probability:.4f}"


class PyramidBottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_channels: int, width: int, stride: int, drop_probability: float):
        super().__init__()
        out_channels = width * self.expansion
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.bn4 = nn.BatchNorm2d(out_channels)
        self.shake_drop = ShakeDrop(drop_probability)
        self.stride = stride
        self.extra_channels = out_channels - in_channels

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv1(self.bn1(x))
        out = self.conv2(F.relu(self.bn2(out)))
        out = self.conv3(F.relu(self.bn3(out)))
        out = self.shake_drop(self.bn4(out))
        shortcut = x if self.stride == 1 else F.avg_pool2d(x, 2, 2, ceil_mode=True)
        # Widths only grow, so the shortcut gets zero channels appended (no parameters).
        shortcut = F.pad(shortcut, (0, 0, 0, 0, 0, self.extra_channels))
        return out + shortcut


class PyramidNet(nn.Module):
    def __init__(self, depth: int, alpha: float, num_classes: int):
        super().__init__()
        if (depth - 2) % 9 != 0 or depth < 11:
            raise HbaError(f"bottleneck PyramidNet depth must be 9n+2 with n >= 1, got {depth}")
        blocks_per_stage = (depth - 2) // 9
        total_blocks = 3 * blocks_per_stage
        growth = alpha / total_blocks
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        blocks, in_channels, width = [], 16, 16.0
        for index in range(total_blocks):
            width += growth
            stride = 2 if index in (blocks_per_stage, 2 * blocks_per_stage) else 1
            drop = FINAL_DROP_PROBABILITY * (index + 1) / total_blocks
            blocks.append(PyramidBottleneck(in_channels, round(width), stride, drop))
            in_channels = round(width) * PyramidBottleneck.expansion
        self.blocks = nn.Sequential(*blocks)
        self.bn_final = nn.BatchNorm2d(in_channels)
        self.fc = nn.Linear(in_channels, num_classes)
        init_resnet_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        out = self.blocks(self.bn1(self.conv1(x)))
        out = F.relu(self.bn_final(out))
        return self.fc(F.adaptive_avg_pool2d(out, 1).flatten(1))
