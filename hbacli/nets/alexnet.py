"""The CIFAR AlexNet of Self-Tuning Networks (MacKay et al. 2019), used in HBA §4.3.

Layer sizes and dropout placement as in STN's public code (cnn/models/alexnet.py): five
3×3 convs (64, 192, 384, 256, 256 filters, bias, the first with stride 2), each followed by
ReLU, 2×2 max pooling after convs 1, 2 and 5, and channel dropout after every conv; then
dropout → fc 1024→4096 → ReLU → dropout → fc 4096→4096 → ReLU → fc →classes.
The default rates are those of STN's fixed-hyperparameter baseline script (0.3 after the
convs, 0.4 before the first two fully connected layers). STN applies its input dropout in
the training loop, not in the model; so does this module (it has none).

Every dropout is a ``RateDropout`` (``nets.dropout``) whose site is named after STN's
hyperparameter (cnn/util/hyperparameter.py): "dropout0".."dropout4" after the convs (whole
channels), "fcdropout0" and "fcdropout1" before the fully connected layers (elements). A search
sets their rates per example by these names; plain use gets the default rates above.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ..errors import HbaError
from .dropout import RateDropout

FILTERS = (64, 192, 384, 256, 256)
STRIDES = (2, 1, 1, 1, 1)
POOL_AFTER = (0, 1, 4)      # 32 → 16 (stride) → 8 → 4 → 4 → 4 → 2: a 256×2×2 feature map
HIDDEN = 4096
DROPOUT_SITES: tuple[str, ...] = tuple(f"dropout{i}" for i in range(len(FILTERS))) + (
    "fcdropout0", "fcdropout1")      # registration order: the conv sites, then the fc ones


class AlexNet(nn.Module):
    def __init__(self, num_classes: int, conv_dropout: Sequence[float] = (0.3,) * 5,
                 fc_dropout: Sequence[float] = (0.4, 0.4)):
        super().__init__()
        if len(conv_dropout) != len(FILTERS) or len(fc_dropout) != 2:
            raise HbaError(f"AlexNet takes {len(FILTERS)} conv and 2 fc dropout rates, got "
                           f"{len(conv_dropout)} and {len(fc_dropout)}")
        channels = (3,) + FILTERS
        self.convs = nn.ModuleList(
            nn.Conv2d(c_in, c_out, 3, stride, 1)
            for c_in, c_out, stride in zip(channels[:-1], channels[1:], STRIDES))
        self.conv_dropouts = nn.ModuleList(
            RateDropout(p, site, channelwise=True)
            for p, site in zip(conv_dropout, DROPOUT_SITES[:len(FILTERS)]))
        self.fc_dropouts = nn.ModuleList(
            RateDropout(p, site, channelwise=False)
            for p, site in zip(fc_dropout, DROPOUT_SITES[len(FILTERS):]))
        self.fc1 = nn.Linear(FILTERS[-1] * 2 * 2, HIDDEN)
        self.fc2 = nn.Linear(HIDDEN, HIDDEN)
        self.fc3 = nn.Linear(HIDDEN, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        for index, (conv, dropout) in enumerate(zip(self.convs, self.conv_dropouts)):
            x = F.relu(conv(x))
            if index in POOL_AFTER:
                x = F.max_pool2d(x, 2)
            x = dropout(x)
        x = self.fc_dropouts[0](x.flatten(1))
        x = self.fc_dropouts[1](F.relu(self.fc1(x)))
        return self.fc3(F.relu(self.fc2(x)))
