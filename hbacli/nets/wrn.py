"""Pre-activation Wide-ResNet WRN-d-k (Zagoruyko & Komodakis 2016), CIFAR layout.

depth d = 6n + 4: a 3×3 stem, three stages of n basic blocks (widths 16k, 32k, 64k; strides
1, 2, 2), then BN-ReLU, global average pooling and a linear classifier. Dropout inside the
blocks is 0 by default, as in the HBA/PBA/AutoAugment recipes. Modules are registered in
forward order so "the first conv/BN" of a strategy is the first one the input meets.
"""

from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ..errors import HbaError
from .init import init_resnet_weights


class PreActBlock(nn.Module):
    """BN-ReLU-conv3×3-BN-ReLU-(dropout)-conv3×3, plus identity or a 1×1 projection."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, dropout: float):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        needs_projection = in_channels != out_channels or stride != 1
        self.shortcut = (nn.Conv2d(in_channels, out_channels, 1, stride, 0, bias=False)
                         if needs_projection else None)

    def forward(self, x: Tensor) -> Tensor:
        pre = F.relu(self.bn1(x))
        out = self.conv1(pre)
        out = self.conv2(self.dropout(F.relu(self.bn2(out))))
        # The projection sees the pre-activated input, as in the reference implementation.
        return out + (x if self.shortcut is None else self.shortcut(pre))


class WideResNet(nn.Module):
    def __init__(self, depth: int, widen: int, num_classes: int, dropout: float = 0.0):
        super().__init__()
        if (depth - 4) % 6 != 0 or depth < 10:
            raise HbaError(f"WRN depth must be 6n+4 with n >= 1, got {depth}")
        blocks_per_stage = (depth - 4) // 6
        widths = (16 * widen, 32 * widen, 64 * widen)
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        stages, in_channels = [], 16
        for width, stride in zip(widths, (1, 2, 2)):
            blocks = []
            for i in range(blocks_per_stage):
                blocks.append(PreActBlock(in_channels, width, stride if i == 0 else 1, dropout))
                in_channels = width
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.bn = nn.BatchNorm2d(in_channels)
        self.fc = nn.Linear(in_channels, num_classes)
        init_resnet_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        out = self.stages(self.conv1(x))
        out = F.relu(self.bn(out))
        return self.fc(F.adaptive_avg_pool2d(out, 1).flatten(1))
