"""What augments the training images of ``hba evaluate``: a schedule file or a standard baseline.

A schedule is replayed in the paper's order (§4.2): the schedule's policy on the uint8 image,
then the dataset's baseline pipeline with Cutout (CIFAR: standardise, flip, crop, Cutout
16×16). The baselines: ``none`` is the baseline pipeline without Cutout, ``cutout`` with it;
``autoaugment``, ``randaugment`` and ``trivialaugment`` are torchvision's own ``v2.AutoAugment``
(CIFAR10 policy for CIFAR, SVHN for SVHN and digits, IMAGENET otherwise), ``v2.RandAugment``
(N=2, M=9) and ``v2.TrivialAugmentWide``, applied before the baseline pipeline with Cutout, as
those papers do; they fill exposed pixels with grey 128 like our ops (and AutoAugment's
original code). torchvision's v2 transforms accept a batch but draw one op and magnitude for
the whole batch, so they run per image (``batches.PerImageBatches``: each image its own draw).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .catalogue import BASELINES, FAMILIES, choices
from .errors import HbaError
from .presets import EvaluateConfig


@dataclass(frozen=True)
class TrainingPolicy:
    """What augments the training images before the baseline pipeline."""

    name: str                      # a baseline name, or "schedule"
    cutout: bool                   # whether the baseline pipeline ends with Cutout
    schedule: Any = None           # hbacli.schedule.Schedule for "schedule"
    fingerprint: str | None = None  # sha256 of the schedule's values, as read at the start

    @property
    def per_image_baseline(self) -> bool:
        """A torchvision baseline: runs per image (see the module docstring)."""
        return self.name in BASELINES and bool(BASELINES[self.name].torchvision)

    def resume_settings(self, cfg: EvaluateConfig) -> dict[str, Any]:
        """What a resumed seed must share with its checkpoint: the config, and for a schedule
        its values (the file named in the config may have been edited since)."""
        settings = cfg.model_dump(mode="json")
        if self.fingerprint is not None:
            settings["schedule_values_sha256"] = self.fingerprint
        return settings


def resolve_policy(text: str) -> TrainingPolicy:
    """A baseline name or a schedule file; HbaError (one line) for anything else."""
    if text in BASELINES:
        return TrainingPolicy(name=text, cutout=BASELINES[text].cutout)
    from .schedule import load_schedule

    if not Path(text).exists():
        raise HbaError(f"'{text}' is neither a schedule file nor one of {choices(BASELINES)}")
    schedule = load_schedule(text)
    # The policy's fingerprint as before spaces existed, so older runs still resume.
    values = (np.stack([schedule.probabilities(), schedule.magnitudes()])
              if schedule.search_space.policy else schedule.values())
    return TrainingPolicy(
        name="schedule", cutout=True, schedule=schedule,
        fingerprint=hashlib.sha256(np.ascontiguousarray(values).tobytes()).hexdigest())


def torchvision_policy(name: str, family: str):
    """torchvision's own per-image policy for a baseline name."""
    from torchvision.transforms import v2

    from .space import FILL

    transform = BASELINES[name].torchvision if name in BASELINES else None
    if transform is None:
        raise HbaError(f"'{name}' is not a torchvision baseline")
    if transform == "AutoAugment":
        policy = v2.AutoAugmentPolicy[FAMILIES[family].autoaugment_policy]
        return v2.AutoAugment(policy, fill=FILL)
    return getattr(v2, transform)(fill=FILL)   # RandAugment's N=2, M=9 are torchvision's defaults
