"""The paper's settings (Table 8: search, Table 9: evaluation) and config resolution.

A run's configuration is resolved in three layers, later ones winning:
the preset of the dataset (and model), then a ``--config`` file (YAML or JSON), then the
command-line flags that were given. The result is a validated pydantic model, saved beside
the run's outputs and in the schedule's provenance.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (BaseModel, BeforeValidator, ConfigDict, Field, Strict, ValidationError,
                      field_validator, model_validator)

from .catalogue import (DEFAULT_DATASET, DEFAULT_STRATEGY, EVALUATION_FALLBACK,
                        EVALUATION_RECIPES, FAMILIES, STRATEGIES, dataset_entry)
from .errors import HbaError

Strategy = Literal[tuple(STRATEGIES)]  # type: ignore[valid-type]
LrSchedule = Literal["cosine", "step", "constant"]
Device = Literal["auto", "cpu", "cuda", "mps"]
HyperInput = Literal["centred", "raw"]
ReplayMode = Literal["batched", "per-image"]


COMPILE_HELP = ("torch.compile the network: fused kernels, and on CUDA its forward and backward "
                "replayed as CUDA graphs (mode reduce-overhead); the first steps pay the compilation")
IMAGE_SIZE_HELP = ("imagefolder: data only: resize (shorter side) and centre-crop every image to "
                   "N×N (None: the images' own size when they all share one square size, else "
                   "32×32)")
FLIP_HELP = ("random horizontal flip in the baseline pipeline (None: the dataset family's "
             "default: on for CIFAR, ImageNet and imagefolder, off for SVHN and digits)")


def _no_bool(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("Input should be a number, not true/false")
    return value


# The value types of every setting. Floats are finite (inf or NaN in --lr or `lr: .inf` would
# only fail later, writing JSON) and not booleans; a string YAML gives for `1e-3` is read as a
# number. Integers are strict: not booleans (`epochs: true` is no epoch count), not floats, not
# strings. Seeds fit what torch (below 2**64) and our 63-bit seed mixing take, and numpy (>= 0).
Real = Annotated[float, BeforeValidator(_no_bool)]
Integer = Annotated[int, Strict()]
SEED_LIMIT = 2**63
Seed = Annotated[int, Strict(), Field(ge=0, lt=SEED_LIMIT)]
Milestone = Annotated[int, Strict(), Field(ge=1)]


def _increasing_milestones(milestones: list[int]) -> list[int]:
    if any(b <= a for a, b in zip(milestones, milestones[1:])):
        raise ValueError(f"must increase strictly (the epochs at which the lr drops tenfold), "
                         f"got {milestones}")
    return milestones


class _Config(BaseModel):
    # allow_inf_nan=False: every float field of every config refuses inf and NaN.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class SearchConfig(_Config):
    """Everything that defines an HBA search (Algorithm 1)."""

    dataset: str
    data_dir: str | None = Field(None, description="where datasets are looked for / cached")
    train_size: Integer | None = Field(None, gt=0, description="training images (None: dataset's)")
    val_size: Integer | None = Field(None, gt=0, description="validation images (None: dataset's)")
    split_seed: Seed = Field(0, description="seed of the train/validation split")
    model: str
    strategy: Strategy = DEFAULT_STRATEGY
    epochs: Integer = Field(gt=0)
    batch_size: Integer = Field(128, gt=0)
    lr: Real = Field(gt=0, description="α: SGD learning rate of the hypernetwork")
    lr_schedule: LrSchedule = "cosine"
    lr_milestones: list[Milestone] = Field(default_factory=list,
                                           description="epochs of ×0.1 (step), increasing")
    momentum: Real = Field(0.9, ge=0, lt=1)
    nesterov: bool = True
    weight_decay: Real = Field(ge=0)
    hyper_lr: Real = Field(gt=0, description="α': Adam learning rate of λ (constant)")
    sigma: Real = Field(1.0, ge=0, description="std of the per-example perturbation ε of λ")
    train_steps: Integer = Field(2, gt=0, description="T_train: hypernetwork steps per round")
    val_steps: Integer = Field(1, ge=0, description="T_val: λ steps per round")
    warmup_epochs: Integer = Field(0, ge=0, description="epochs of hypernetwork steps only")
    val_bn_mode: Literal["eval", "train"] = Field(
        "train", description="BatchNorm mode on the λ step: train (batch statistics) or eval "
                             "(running statistics); train told good from bad better on digits"
    )
    hyper_input: HyperInput = Field(
        "centred", description="what the hyper-layers see: centred = λ − λ0 (λ0: the starting "
        "λ), raw = λ itself (the paper's literal form); the same family of functions")
    hyper_v_init: Real = Field(0.01, ge=0, description="φV ~ N(0, (hyper_v_init/√|λ|)²) at "
                                "the start; 0: the hyper-layers start exactly at φ0 and learn "
                                "from the perturbed training examples which way λ matters")
    init: str | None = Field(None, description="schedule file whose values λ starts from "
                             "(None: every hyperparameter at 0.95·lo + 0.05·hi)")
    init_epoch: Integer = Field(0, ge=0, description="which epoch of the init schedule (0-based)")
    flip: bool | None = Field(None, description=FLIP_HELP)
    image_size: Integer | None = Field(None, gt=0, description=IMAGE_SIZE_HELP)
    seed: Seed = 0
    device: Device = "auto"
    compile: bool = Field(False, description=COMPILE_HELP)
    precision: Literal["auto", "bf16", "fp16", "fp32"] = Field(
        "auto", description="forward passes in: auto (CUDA: bf16 on GPUs with native bf16, "
        "compute capability >= 8.0, else fp16 with a gradient scaler; CPU: fp32), bf16, fp16 "
        "(CUDA only, gradient scaler) or fp32; saved resolved (auto replaced by what it chose)")

    _milestones = field_validator("lr_milestones")(_increasing_milestones)

    @model_validator(mode="after")
    def _check(self) -> "SearchConfig":
        if self.lr_schedule == "step" and not self.lr_milestones:
            raise ValueError("lr_schedule 'step' needs lr_milestones")
        if self.warmup_epochs >= self.epochs:
            raise ValueError(f"warmup_epochs ({self.warmup_epochs}) must be < epochs ({self.epochs})")
        return self


class EvaluateConfig(_Config):
    """Everything that defines training a target network with a policy."""

    policy: str = Field(description="schedule file, or none/cutout/autoaugment/randaugment/trivialaugment")
    dataset: str
    data_dir: str | None = None
    train_size: Integer | None = Field(None, gt=0)
    val_size: Integer | None = Field(None, ge=0)
    split_seed: Seed = 0
    model: str
    epochs: Integer = Field(gt=0)
    batch_size: Integer = Field(128, gt=0)
    lr: Real = Field(gt=0)
    lr_schedule: LrSchedule = "cosine"
    lr_milestones: list[Milestone] = Field(default_factory=list)
    momentum: Real = Field(0.9, ge=0, lt=1)
    nesterov: bool = True
    weight_decay: Real = Field(ge=0)
    seeds: list[Seed] = Field(default_factory=lambda: [0], min_length=1,
                              description="one trained model each; no seed twice")
    flip: bool | None = Field(None, description=FLIP_HELP)
    image_size: Integer | None = Field(None, gt=0, description=IMAGE_SIZE_HELP)
    replay: ReplayMode = Field("batched", description="how a schedule is applied: batched on "
                               "the device, or per-image in DataLoader workers (for comparison)")
    workers: Integer | None = Field(None, ge=0, description="DataLoader workers per process for "
                                    "per-image policies (None: up to 8, by the CPUs)")
    eval_every: Integer = Field(0, ge=0, description="test the network every N epochs into "
                                "epochs.csv (0: only at the end, as the paper)")
    init_weights: str | None = Field(None, description="state dict to start the network from "
                                     "(e.g. a search's network.pt) instead of a random init")
    device: Device = "auto"
    compile: bool = Field(False, description=COMPILE_HELP)
    precision: Literal["auto", "bf16", "fp16", "fp32"] = Field(
        "auto", description="forward passes in: auto (CUDA: bf16 on GPUs with native bf16, "
        "compute capability >= 8.0, else fp16 with a gradient scaler; CPU: fp32), bf16, fp16 "
        "(CUDA only, gradient scaler) or fp32; saved resolved (auto replaced by what it chose)")

    _milestones = field_validator("lr_milestones")(_increasing_milestones)

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, seeds: list[int]) -> list[int]:
        repeated = next((s for i, s in enumerate(seeds) if s in seeds[:i]), None)
        if repeated is not None:
            raise ValueError(f"duplicate seed {repeated} (each seed trains one model; "
                             f"the mean ± std needs distinct ones)")
        return seeds

    @model_validator(mode="after")
    def _check(self) -> "EvaluateConfig":
        if self.lr_schedule == "step" and not self.lr_milestones:
            raise ValueError("lr_schedule 'step' needs lr_milestones")
        return self


def lr_factor(step: int, cfg: SearchConfig | EvaluateConfig, steps_per_epoch: int) -> float:
    """Multiplier of the learning rate after ``step`` optimiser steps (it moves every step)."""
    if cfg.lr_schedule == "cosine":
        total = cfg.epochs * steps_per_epoch
        return 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))
    if cfg.lr_schedule == "step":
        epoch = step // steps_per_epoch
        return 0.1 ** sum(1 for m in cfg.lr_milestones if epoch >= m)
    return 1.0


def search_preset(dataset: str) -> dict[str, Any]:
    """Table 8's settings of a dataset (``catalogue.DATASETS``), with its name."""
    return dict(dataset_entry(dataset).search, dataset=dataset)


def evaluate_preset(dataset: str, model: str | None) -> dict[str, Any]:
    """Table 9's recipe for (dataset, model); model None: the dataset family's usual one."""
    entry = dataset_entry(dataset)
    model = model or FAMILIES[entry.family].eval_model
    row = EVALUATION_RECIPES.get((entry.evaluation_row, model), EVALUATION_FALLBACK)
    return dict(row, dataset=dataset, model=model)


def load_config_file(path: str | Path | None) -> dict[str, Any]:
    """A YAML or JSON mapping of config fields (names as in SearchConfig/EvaluateConfig)."""
    if path is None:
        return {}
    path = Path(path)
    if not path.is_file():
        raise HbaError(f"config file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise HbaError(f"cannot read config file {path}: not UTF-8 text (byte "
                       f"0x{exc.object[exc.start]:02x} at offset {exc.start}); save it as "
                       f"UTF-8") from None
    except OSError as exc:
        raise HbaError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as exc:  # any parse error is the user's file, reported on one line
        raise HbaError(f"cannot parse config file {path}: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise HbaError(f"config file {path} must hold a mapping of field: value")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def _validate(model_type: type[_Config], values: dict[str, Any]) -> Any:
    try:
        return model_type(**values)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "config"
        message = err["msg"].removeprefix("Value error, ")
        raise HbaError(f"invalid setting {where}: {message}") from None
    except TypeError as exc:
        raise HbaError(f"invalid config: {exc}") from None


def _flag_or_file(flag: str | None, file_values: dict[str, Any], field: str) -> str | None:
    """The flag's value when given, else the file's (taken out of ``file_values``, so that the
    file cannot override the flag later): dataset and model choose the preset, so they are
    settled before the layers are merged."""
    from_file = file_values.pop(field, None)
    if flag is not None:
        return flag
    if from_file is not None and not isinstance(from_file, str):
        raise HbaError(f"invalid setting {field}: Input should be a valid string")
    return from_file


def resolve_search_config(dataset: str | None, config_file: str | Path | None = None,
                          **overrides: Any) -> SearchConfig:
    """Preset(dataset) ← config file ← overrides (None values are ignored).

    ``dataset`` (a flag) wins over the file's ``dataset``; None takes the file's, else
    ``DEFAULT_DATASET``."""
    file_values = load_config_file(config_file)
    dataset = _flag_or_file(dataset, file_values, "dataset") or DEFAULT_DATASET
    values = search_preset(dataset)
    values.update(file_values)
    values.update({k: v for k, v in overrides.items() if v is not None})
    return _validate(SearchConfig, values)


def resolve_evaluate_config(policy: str, dataset: str | None, model: str | None,
                            config_file: str | Path | None = None,
                            **overrides: Any) -> EvaluateConfig:
    """Preset(dataset, model) ← config file ← overrides (None values are ignored).

    ``dataset`` and ``model`` (flags) win over the file's; None takes the file's, else
    ``DEFAULT_DATASET`` and the dataset's usual model."""
    file_values = load_config_file(config_file)
    dataset = _flag_or_file(dataset, file_values, "dataset") or DEFAULT_DATASET
    model = _flag_or_file(model, file_values, "model")
    values = evaluate_preset(dataset, model)
    values.update(file_values)
    values.update({k: v for k, v in overrides.items() if v is not None})
    values["policy"] = policy
    return _validate(EvaluateConfig, values)


def default_sizes(dataset: str, command: Literal["search", "evaluate"]) -> tuple[int | None,
                                                                                 int | None]:
    """(train_size, val_size) that a config's None resolves to, where that is known without
    the images: ``None`` where it depends on the data found (the training set of a full dataset
    is all that the validation set leaves; an imagefolder validates on a fifth of its images).

    Search validates on the dataset's held-out set; evaluate holds out none of a full dataset
    (val_size 0) and, on a reduced one, the search's (see evaluate.load_training_data)."""
    try:
        entry = dataset_entry(dataset)
    except HbaError:   # a saved config of an unknown dataset: nothing to resolve
        return None, None
    train, val = entry.train_size, entry.val_size
    if command == "evaluate" and not dataset.startswith("reduced-"):
        val = 0
    return train, val


def effective_sizes(config: dict[str, Any]) -> dict[str, Any]:
    """A saved config (``model_dump(mode="json")`` of a SearchConfig or, with its ``policy``,
    an EvaluateConfig) with train_size/val_size None replaced by the sizes they resolve to
    (``default_sizes``), so that None and the default typed out compare equal on a resume."""
    dataset = config.get("dataset")
    if not isinstance(dataset, str):
        return config
    defaults = default_sizes(dataset, "evaluate" if "policy" in config else "search")
    effective = dict(config)
    for field, default in zip(("train_size", "val_size"), defaults):
        if field in effective and effective[field] is None and default is not None:
            effective[field] = default
    return effective
