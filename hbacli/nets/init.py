"""The weight initialisation shared by the residual families (WRN, Shake-Shake, PyramidNet)."""

from __future__ import annotations

import torch.nn as nn


def init_resnet_weights(model: nn.Module) -> None:
    """He-normal convs (fan_out), BN γ=1 β=0, zero classifier bias: the reference inits."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.zeros_(m.bias)
