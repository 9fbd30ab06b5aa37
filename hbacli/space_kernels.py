"""The kernels of the search spaces: how a batch of uint8 images becomes the network's input
under per-example hyperparameter values, and which dropout rates the network gets.

One class per ``SearchSpace.kernels`` name (``KERNELS``). Each takes the physical values of
every hyperparameter of its space, one row per example — (N, |λ|), float, on the images'
device: λ_i = λ + ε_i mapped to physical units during a search, one epoch's values repeated
during a replay — and runs batched, with no loop over examples and no host synchronisation.

- ``policy`` (the ``hba`` space): PBA's augmentation function over the 30 op copies
  (``policy.augment_batch``), then the dataset family's baseline pipeline (paper §4.2).
- ``stn`` (the ``stn`` space), in Self-Tuning Networks' order (cnn/datasets/cifar.py,
  cnn/hypertrain.py): colour jitter on the [0, 1] image (STN's ColorJitter on the PIL image,
  each strength v used as (1 − 2·10⁻³)·v + 10⁻³), standardisation, Cutout with ``cutholes``
  holes of side ``cutlength`` (both floored; zero after standardisation is the mean), input
  dropout, input scaling. No crop, flip or fixed Cutout: STN's CIFAR pipeline has none.

Dropout rates are not the kernels' business: ``dropout_rates`` maps a space's dropout scalars
to the network's sites (``nets.dropout``), and the engine or trainer sets them.
"""

from __future__ import annotations

from functools import cache

import torch
from torch import Tensor

from . import space
from .errors import HbaError
from .nets.dropout import dropout_sites
from .pipeline import BaselinePipeline, MaybeGenerator
from .policy import augment_batch
from .spaces import FLOOR_TOLERANCE, SearchSpace, get_space
from .stn_ops import (
    colour_jitter,
    cutout_holes,
    input_dropout,
    input_scale,
    stn_jitter_strength,
)


def to_physical(space_: SearchSpace, lam: Tensor) -> Tensor:
    """(…, |λ|) logits → physical values (torch; differentiable), as ``SearchSpace.to_physical``."""
    if lam.shape[-1] != space_.size:
        raise HbaError(f"λ of the {space_.name} space has {space_.size} entries, got "
                       f"{lam.shape[-1]}")
    low, high = _bounds(space_.name, lam.device, lam.dtype)
    return low + (high - low) * torch.sigmoid(lam)


# Constant tensors made once per device: a host-to-device copy per step would synchronise.
@cache
def _bounds(name: str, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    declared = get_space(name)
    return (torch.as_tensor(declared.low, dtype=dtype, device=device),
            torch.as_tensor(declared.high, dtype=dtype, device=device))


@cache
def _magnitude_index(device: torch.device) -> Tensor:
    return torch.as_tensor(space.MAGNITUDE_COPY_INDEX, device=device)


def policy_split(values: Tensor) -> tuple[Tensor, Tensor]:
    """The policy's 54 physical values (…, 54) → probabilities (…, 30) and magnitudes (…, 30),
    0 for probability-only ops (the policy ignores them)."""
    magnitudes = values.new_zeros(values.shape[:-1] + (space.NUM_OP_COPIES,))
    magnitudes[..., _magnitude_index(values.device)] = values[..., space.MAGNITUDE_SLOTS]
    return values[..., space.PROBABILITY_SLOTS], magnitudes


class PolicyKernels:
    """The ``hba`` space: PBA's policy, then the baseline pipeline."""

    def __init__(self, space_: SearchSpace, policy_kernels: str | None = None):
        self.space = space_
        self.policy_kernels = policy_kernels   # policy.augment_batch's execution strategy

    def train(self, images: Tensor, values: Tensor, pipeline: BaselinePipeline,
              generator: MaybeGenerator = None) -> Tensor:
        probabilities, magnitudes = policy_split(values[:, :space.NUM_HYPERPARAMETERS])
        x = augment_batch(images, probabilities, magnitudes, generator=generator,
                          kernels=self.policy_kernels)
        return pipeline.train(x, generator=generator)


class StnKernels:
    """The ``stn`` space: STN's CIFAR augmentation, batched (see the module docstring)."""

    def __init__(self, space_: SearchSpace, policy_kernels: str | None = None):
        self.space = space_
        index = space_.scalar_index
        self.jitter = [index(name) for name in ("bright", "contrast", "sat", "hue")]
        self.cutlength, self.cutholes = index("cutlength"), index("cutholes")
        self.indropout, self.inscale = index("indropout"), index("inscale")
        self.max_holes = int(space_.scalars[self.cutholes - space_.policy_size].high)

    def train(self, images: Tensor, values: Tensor, pipeline: BaselinePipeline,
              generator: MaybeGenerator = None) -> Tensor:
        strengths = stn_jitter_strength(values[:, self.jitter])
        x = colour_jitter(images.float() / 255.0, strengths, generator)
        x = pipeline.eval(x)
        length = torch.floor(values[:, self.cutlength] + FLOOR_TOLERANCE)
        holes = torch.floor(values[:, self.cutholes] + FLOOR_TOLERANCE)
        x = cutout_holes(x, length, holes, self.max_holes, generator)
        x = input_dropout(x, values[:, self.indropout], generator)
        return input_scale(x, values[:, self.inscale], generator)


# The implementations of the spaces' ``kernels`` names.
KERNELS = {"policy": PolicyKernels, "stn": StnKernels}


def space_kernels(space_: SearchSpace, policy_kernels: str | None = None):
    return KERNELS[space_.kernels](space_, policy_kernels)


def dropout_rates(space_: SearchSpace, values: Tensor) -> dict[str, Tensor]:
    """The network's dropout rates for the space's dropout scalars: site → (N,) (or a 0-d
    tensor for one row of values)."""
    return {scalar.site: values[..., space_.policy_size + i]
            for i, scalar in enumerate(space_.scalars) if scalar.site is not None}


def check_dropout_sites(space_: SearchSpace, model: torch.nn.Module, model_name: str) -> None:
    """HbaError (one line) when the network lacks a dropout site the space sets."""
    needed = space_.dropout_sites
    if not needed:
        return
    found = dropout_sites(model)
    missing = [site for site in needed if site not in found]
    if missing:
        has = f"its sites are {', '.join(found)}" if found else "it has no dropout sites"
        raise HbaError(f"the {space_.name} space sets dropout rates at sites "
                       f"{', '.join(needed)}, but model {model_name} lacks "
                       f"{', '.join(missing)} ({has}); use --model {space_.network}")
