"""The catalogue: hba's datasets, dataset families, baselines, strategies, search spaces,
methods and models by name.

One table per catalogue, torch-free, read by everything that needs a name or a property: the
configs and the CLI (choices, presets), the loaders (sizes, sources), the baseline pipeline
(flip, pad, Cutout), the trainer (baselines, AutoAugment's policy), the search (strategies).
Adding a dataset, a baseline, a strategy or a model is one entry here plus its implementation
(a reader in ``datasets.py``, a transform in ``baselines.py``, a layer rule in ``hyper.py``, a
builder in ``nets``); tests/test_catalogue.py checks that every entry has one.

Tables 8 and 9 of the paper are here too: a dataset's search settings are part of its entry,
the evaluation recipes are keyed by (dataset family row, model).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .errors import HbaError

IMAGEFOLDER_PREFIX = "imagefolder:"


# --------------------------------------------------------------------------- dataset families

@dataclass(frozen=True)
class Family:
    """What a family of datasets shares: its baseline pipeline at 32×32 (pad and Cutout scale
    with side/32; paper §4.2), torchvision's AutoAugment policy for it, its usual target net."""

    flip: bool                # random horizontal flip by default (``flip`` config overrides)
    pad_at_32: int            # zero padding of the random crop; 0: no crop
    cutout_at_32: int         # side of the baseline Cutout square; 0: the family has none
    autoaugment_policy: str   # a torchvision.transforms.v2.AutoAugmentPolicy member
    eval_model: str           # `hba evaluate`'s model when none is given


# Digits are not mirror-invariant (a flipped 2, 3, 5 or 7 is no digit) and fill most of the
# frame: no flip, as SVHN, and Cutout 6 (1.5 pixels of the 8×8 originals), which hides part of
# a stroke, not the digit (chosen by measurement against 4 and 8: README, "Does the search
# work?"). ImageNet's crop is its own (random-resized), so its pad and Cutout are unused.
FAMILIES: dict[str, Family] = {
    "cifar": Family(flip=True, pad_at_32=4, cutout_at_32=16, autoaugment_policy="CIFAR10",
                    eval_model="wrn40_2"),
    "svhn": Family(flip=False, pad_at_32=0, cutout_at_32=20, autoaugment_policy="SVHN",
                   eval_model="wrn28_10"),
    "imagenet": Family(flip=True, pad_at_32=0, cutout_at_32=0, autoaugment_policy="IMAGENET",
                       eval_model="resnet50"),
    "digits": Family(flip=False, pad_at_32=4, cutout_at_32=6, autoaugment_policy="SVHN",
                     eval_model="wrn16_1"),
    "imagefolder": Family(flip=True, pad_at_32=4, cutout_at_32=16, autoaugment_policy="IMAGENET",
                          eval_model="wrn40_2"),
}


# --------------------------------------------------------------------------- datasets

@dataclass(frozen=True)
class Dataset:
    """One dataset name: where its images come from, how it is split, how it is searched.

    ``source``: the reader in ``datasets.py`` (``SOURCES``), or "digits" (embedded) or
    "imagefolder" (the user's files). ``train_size`` None: every pool image the validation
    set leaves; ``val_size`` None: decided by the data (imagefolder: a fifth, at most 10,000).
    ``search``: the Table 8 settings of ``hba search``; ``evaluation_row``: which rows of
    Table 9 (``EVALUATION_RECIPES``) ``hba evaluate`` takes its recipe from.
    """

    family: str
    source: str
    train_size: int | None
    val_size: int | None
    search: dict[str, Any] = field(hash=False)
    evaluation_row: str = "cifar10"


_REDUCED_CIFAR_SEARCH = dict(model="wrn40_2", epochs=200, lr=0.05, lr_schedule="cosine",
                             weight_decay=0.005, hyper_lr=0.03)
_SVHN_SEARCH = dict(model="wrn40_2", epochs=160, lr=0.01, lr_schedule="cosine",
                    weight_decay=0.01, hyper_lr=0.02)
_IMAGENET_SEARCH = dict(model="wrn40_2", epochs=270, lr=0.1, lr_schedule="step",
                        lr_milestones=[90, 180, 240], weight_decay=0.001, hyper_lr=0.007)
_FULL_CIFAR_SEARCH = dict(lr=0.1, lr_schedule="cosine", weight_decay=0.0005, hyper_lr=0.003,
                          epochs=200)

# Search settings: the paper's Table 8. `digits` is ours, the embedded default, sized for a
# 2-core CPU in minutes. A user's own ImageFolder data gets the reduced-CIFAR-10 recipe.
DATASETS: dict[str, Dataset] = {
    "digits": Dataset("digits", "digits", 1000, 400, evaluation_row="digits", search=dict(
        model="wrn16_1", epochs=20, batch_size=64, lr=0.05, lr_schedule="cosine",
        weight_decay=5e-4, hyper_lr=0.03)),
    "reduced-cifar10": Dataset("cifar", "cifar10", 4000, 10000, _REDUCED_CIFAR_SEARCH),
    "cifar10": Dataset("cifar", "cifar10", None, 10000,
                       dict(model="wrn40_2", **_FULL_CIFAR_SEARCH)),
    "reduced-cifar100": Dataset("cifar", "cifar100", 4000, 10000, _REDUCED_CIFAR_SEARCH,
                                evaluation_row="cifar100"),
    "cifar100": Dataset("cifar", "cifar100", None, 10000,
                        dict(model="wrn28_10", **_FULL_CIFAR_SEARCH), evaluation_row="cifar100"),
    "reduced-svhn": Dataset("svhn", "svhn-core", 4000, 10000, _SVHN_SEARCH,
                            evaluation_row="svhn"),
    # PBA's full SVHN trains on core + extra (604,388 images).
    "svhn": Dataset("svhn", "svhn-full", None, 10000, _SVHN_SEARCH, evaluation_row="svhn"),
    "reduced-imagenet": Dataset("imagenet", "reduced-imagenet", 6000, 10000, _IMAGENET_SEARCH,
                                evaluation_row="imagenet"),
    "imagenet": Dataset("imagenet", "imagenet", None, 10000, _IMAGENET_SEARCH,
                        evaluation_row="imagenet"),
    # `imagefolder:PATH`: the entry every such name reads
    "imagefolder": Dataset("imagefolder", "imagefolder", None, None, _REDUCED_CIFAR_SEARCH),
}
DATASET_NAMES: tuple[str, ...] = tuple(n for n in DATASETS if n != "imagefolder")
DEFAULT_DATASET = "digits"   # both commands' --dataset when neither flag nor file names one


def dataset_entry(name: str) -> Dataset:
    """The entry of a dataset name (``imagefolder:PATH`` → the imagefolder entry)."""
    key = "imagefolder" if name.startswith(IMAGEFOLDER_PREFIX) else name
    if key not in DATASETS or key == "imagefolder" and name == "imagefolder":
        raise HbaError(f"unknown dataset '{name}' (known: {', '.join(DATASET_NAMES)}, "
                       f"{IMAGEFOLDER_PREFIX}PATH)")
    return DATASETS[key]


def dataset_family(name: str) -> str:
    """'cifar10', 'reduced-cifar100', 'imagefolder:PATH', … → a key of ``FAMILIES``."""
    return dataset_entry(name).family


# --------------------------------------------------------------------------- Table 9

_WRNS = ("wrn40_2", "wrn28_10", "wrn28_2", "wrn16_1")
_SHAKE_SHAKES = ("shake26_2x32d", "shake26_2x96d", "shake26_2x112d")
_COSINE = dict(lr_schedule="cosine")

# Evaluation recipes: the paper's Table 9, keyed by (evaluation row, model); CIFAR-100 differs
# from CIFAR-10 in places. `digits` is ours.
EVALUATION_RECIPES: dict[tuple[str, str], dict[str, Any]] = {
    **{("cifar10", m): dict(lr=0.1, weight_decay=5e-4, batch_size=128, epochs=200, **_COSINE)
       for m in _WRNS},
    **{("cifar10", m): dict(lr=0.01, weight_decay=1e-3, batch_size=128, epochs=1800, **_COSINE)
       for m in _SHAKE_SHAKES},
    ("cifar10", "pyramidnet272_shakedrop"): dict(lr=0.05, weight_decay=5e-5, batch_size=64,
                                                 epochs=1800, **_COSINE),
    **{("cifar100", m): dict(lr=0.1, weight_decay=5e-4, batch_size=128, epochs=200, **_COSINE)
       for m in _WRNS},
    **{("cifar100", m): dict(lr=0.01, weight_decay=2.5e-3, batch_size=128, epochs=1800, **_COSINE)
       for m in _SHAKE_SHAKES},
    ("cifar100", "pyramidnet272_shakedrop"): dict(lr=0.025, weight_decay=5e-4, batch_size=64,
                                                  epochs=1800, **_COSINE),
    **{("svhn", m): dict(lr=0.005, weight_decay=1e-3, batch_size=128, epochs=160, **_COSINE)
       for m in _WRNS},
    **{("svhn", m): dict(lr=0.01, weight_decay=1.5e-4, batch_size=128, epochs=160, **_COSINE)
       for m in _SHAKE_SHAKES},
    ("imagenet", "resnet50"): dict(lr=0.1, weight_decay=1e-4, batch_size=256, epochs=270,
                                   lr_schedule="step", lr_milestones=[90, 180, 240]),
    ("digits", "wrn16_1"): dict(lr=0.05, weight_decay=5e-4, batch_size=64, epochs=15, **_COSINE),
}
# A (dataset, model) pair the paper has no row for: the WRN CIFAR-10 recipe.
EVALUATION_FALLBACK: dict[str, Any] = dict(lr=0.1, weight_decay=5e-4, batch_size=128, epochs=200,
                                           **_COSINE)


# --------------------------------------------------------------------------- baselines

@dataclass(frozen=True)
class Baseline:
    """A fixed policy `hba evaluate` compares a schedule with (its name is its CLI value)."""

    cutout: bool                 # the baseline pipeline ends with Cutout
    torchvision: str | None      # a torchvision.transforms.v2 class applied per image first
    summary: str


BASELINES: dict[str, Baseline] = {
    "none": Baseline(False, None, "the dataset's baseline pipeline alone"),
    "cutout": Baseline(True, None, "the baseline pipeline with Cutout"),
    "autoaugment": Baseline(True, "AutoAugment",
                            "torchvision's AutoAugment (the dataset family's policy)"),
    "randaugment": Baseline(True, "RandAugment", "torchvision's RandAugment (N=2, M=9)"),
    "trivialaugment": Baseline(True, "TrivialAugmentWide", "torchvision's TrivialAugmentWide"),
}


# --------------------------------------------------------------------------- strategies

@dataclass(frozen=True)
class Strategy:
    """Weight sharing (paper §3.4, Table 4): which layers of the network become hyper-layers."""

    kinds: tuple[str, ...]    # layer kinds, of "conv" (Conv2d), "bn" (affine BatchNorm2d), "linear"
    first_only: bool          # only the first such layer in registration (forward) order
    summary: str


# "all" is §3.3's hypernetwork without sharing, as Self-Tuning Networks build theirs; Linear
# layers are shared (plain) in the paper's five strategies.
STRATEGIES: dict[str, Strategy] = {
    "conv+bn": Strategy(("conv", "bn"), False, "every Conv2d and BatchNorm2d"),
    "conv": Strategy(("conv",), False, "every Conv2d"),
    "bn": Strategy(("bn",), False, "every BatchNorm2d"),
    "1st-conv": Strategy(("conv",), True, "the first Conv2d only"),
    "1st-bn": Strategy(("bn",), True, "the first BatchNorm2d only (the paper's choice)"),
    "all": Strategy(("conv", "bn", "linear"), False,
                    "every Conv2d, BatchNorm2d and Linear: no sharing (Self-Tuning Networks)"),
}
DEFAULT_STRATEGY = "1st-bn"


# --------------------------------------------------------------------------- search spaces

# What λ holds (paper §4.1 and §4.3). Declared in ``spaces.py`` (one row per hyperparameter)
# with their kernels in ``space_kernels.py``; tests/test_catalogue.py keeps the three in step.
SPACES: dict[str, str] = {
    "hba": "the paper's 15 operations in 2 copies: 30 probabilities and 24 magnitudes "
           "(Table 7, PBA's augmentation function)",
    "stn": "Self-Tuning Networks' CIFAR AlexNet hyperparameters (§4.3): colour jitter, "
           "Cutout length and holes, input dropout and scaling, and 7 dropout rates of the "
           "network (15)",
}
DEFAULT_SPACE = "hba"


# --------------------------------------------------------------------------- methods

@dataclass(frozen=True)
class Method:
    """A hypernetwork method: the search settings it brings (between the dataset's preset and
    the config file, so a flag still overrides them)."""

    settings: dict[str, Any]
    summary: str


# STN's own choices (Self-Tuning Networks' public code, cnn/hypertrain.py and
# stn_utils/hyperparameter.py): every layer a hyper-layer, perturbation scale 0.5 learned with
# an entropy bonus, the hyper-layers fed the raw logits.
METHODS: dict[str, Method] = {
    "hba": Method({}, "Hypernetwork-Based Augmentation: the settings of the dataset's preset"),
    "stn": Method({"strategy": "all", "sigma": 0.5, "perturbation_scale": "learned",
                   "hyper_input": "raw"},
                  "Self-Tuning Networks as a baseline: strategy all, perturbation scale 0.5 "
                  "learned with STN's entropy term, raw λ fed to the hyper-layers"),
}
DEFAULT_METHOD = "hba"


# --------------------------------------------------------------------------- models

MODELS: dict[str, str] = {
    "wrn16_1": "Wide-ResNet-16-1: the small net of CPU runs",
    "wrn28_2": "Wide-ResNet-28-2",
    "wrn40_2": "Wide-ResNet-40-2: the paper's search network",
    "wrn28_10": "Wide-ResNet-28-10",
    "shake26_2x32d": "Shake-Shake 26 2×32d",
    "shake26_2x96d": "Shake-Shake 26 2×96d",
    "shake26_2x112d": "Shake-Shake 26 2×112d",
    "pyramidnet272_shakedrop": "PyramidNet-272 (α = 200) with ShakeDrop",
    "resnet50": "torchvision's ResNet-50 (ImageNet)",
    "alexnet": "the CIFAR AlexNet of Self-Tuning Networks",
}


def check_model(name: str) -> None:
    """HbaError (one line) for a name that is not in ``MODELS``."""
    if name not in MODELS:
        raise HbaError(f"unknown model '{name}' (known: {choices(MODELS)})")


def choices(table: dict[str, Any]) -> str:
    """'a, b, c': a table's names for help texts and error messages."""
    return ", ".join(table)
