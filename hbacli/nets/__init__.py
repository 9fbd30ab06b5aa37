"""The networks by name: the paper's targets and a small WRN for CPU runs.

Every network takes N×3×32×32 input (ResNet-50 any size ≥ 32) and ends in global average
pooling, so it also runs on other sizes. Nothing here knows about hyper-layers:
``hbacli.hyper.to_hypernetwork`` converts any of these (or a user's own nn.Module).
"""

from __future__ import annotations

from collections.abc import Callable

import torch.nn as nn

from ..catalogue import check_model
from ..errors import HbaError
from .alexnet import AlexNet
from .pyramidnet import PyramidNet
from .shakeshake import ShakeShakeResNet
from .wrn import WideResNet


def _resnet50(num_classes: int) -> nn.Module:
    from torchvision.models import resnet50

    return resnet50(weights=None, num_classes=num_classes)


# The implementations of catalogue.MODELS (tests/test_catalogue.py keeps the two in step).
_BUILDERS: dict[str, Callable[[int], nn.Module]] = {
    "wrn16_1": lambda c: WideResNet(16, 1, c),
    "wrn28_2": lambda c: WideResNet(28, 2, c),
    "wrn40_2": lambda c: WideResNet(40, 2, c),
    "wrn28_10": lambda c: WideResNet(28, 10, c),
    "shake26_2x32d": lambda c: ShakeShakeResNet(26, 32, c),
    "shake26_2x96d": lambda c: ShakeShakeResNet(26, 96, c),
    "shake26_2x112d": lambda c: ShakeShakeResNet(26, 112, c),
    "pyramidnet272_shakedrop": lambda c: PyramidNet(272, 200, c),
    "resnet50": _resnet50,
    "alexnet": lambda c: AlexNet(c),
}

def build_model(name: str, num_classes: int) -> nn.Module:
    """A freshly initialised network (no pretrained weights); HbaError on an unknown name."""
    check_model(name)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise HbaError(f"num_classes must be a positive integer, got {num_classes!r}")
    return _BUILDERS[name](num_classes)
