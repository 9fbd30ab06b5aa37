"""The paper's settings (Table 8: search, Table 9: evaluation) and config resolution.

A run's configuration is resolved in layers, later ones winning: the preset of the dataset
(and model), for a search the settings of its ``method`` (``catalogue.METHODS``), then a
``--config`` file (YAML or JSON), then the command-line flags that were given. The result is
a validated pydantic model, saved beside the run's outputs and in the schedule's provenance.

Every setting is declared once, as a field of a model below with its description: the same
field is a key of the config file, a property of the JSON Schema (``hba schema``) and a flag
of its command, whose ``--help`` is that description (``options.py`` builds the flags). Fields
that search and evaluate share live in ``TrainingConfig``. A description is the field's help:
written as a sentence, without the field's default (the help appends it), except where the
default is None, which the description explains as "(default: …)".
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    ValidationError,
    field_validator,
    model_validator,
)

from .catalogue import (
    BASELINES,
    DATASET_NAMES,
    DATASETS,
    DEFAULT_DATASET,
    DEFAULT_METHOD,
    DEFAULT_SPACE,
    DEFAULT_STRATEGY,
    EVALUATION_FALLBACK,
    EVALUATION_RECIPES,
    FAMILIES,
    IMAGEFOLDER_PREFIX,
    METHODS,
    MODELS,
    SPACES,
    STRATEGIES,
    choices,
    dataset_entry,
)
from .errors import HbaError

Strategy = Literal[tuple(STRATEGIES)]  # type: ignore[valid-type]
SpaceName = Literal[tuple(SPACES)]  # type: ignore[valid-type]
MethodName = Literal[tuple(METHODS)]  # type: ignore[valid-type]
LrSchedule = Literal["cosine", "step", "constant"]
Device = Literal["auto", "cpu", "cuda", "mps"]
HyperInput = Literal["centred", "raw"]
ReplayMode = Literal["batched", "per-image"]
Precision = Literal["auto", "bf16", "fp16", "fp32"]

# json_schema_extra of a str setting that names a file or folder: "format": "path", as pydantic
# writes for Path fields. The command line takes it as a path that click never pre-checks.
PATH = {"format": "path"}


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


def _families(flip: bool) -> str:
    return ", ".join(name for name, family in FAMILIES.items() if family.flip == flip)


class _Config(BaseModel):
    # allow_inf_nan=False: every float field of every config refuses inf and NaN.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class TrainingConfig(_Config):
    """What a search and an evaluation share: the data, the network and its SGD training, the
    device. ``dataset`` and ``model`` choose the preset the other fields start from."""

    dataset: str = Field(description=f"Dataset: {', '.join(DATASET_NAMES)}, or "
                         f"{IMAGEFOLDER_PREFIX}PATH (your images, a folder per class); brings "
                         f"the paper's settings for it, Table 8 (search) or 9 (evaluate) "
                         f"(default: {DEFAULT_DATASET})")
    data_dir: str | None = Field(None, json_schema_extra=PATH, description="Where datasets are "
                                 "found or downloaded (default: $HBA_DATA, else a user cache "
                                 "dir)")
    train_size: Integer | None = Field(None, gt=0, description="Training images (default: the "
                                       "dataset's)")
    val_size: Integer | None = Field(
        None, ge=0, description="Images held out of training: the search validates λ on them "
        "(at least 1); evaluate holds them out unused (default: the dataset's validation set "
        "for a search; for evaluate, the search's of a reduced dataset, none of a full one)")
    split_seed: Seed = Field(0, description="Seed of the train/validation split")
    image_size: Integer | None = Field(
        None, gt=0, description=f"{IMAGEFOLDER_PREFIX} data only: resize (shorter side) and "
        "centre-crop every image to N×N (default: the images' own size when they all share one "
        "square size, else 32)")
    flip: bool | None = Field(
        None, description=f"Random horizontal flip in the baseline pipeline; your call for "
        f"your own data: off where mirror images mean something else (default: the dataset "
        f"family's: on for {_families(True)}; off for {_families(False)})")
    model: str = Field(description="Network: for a search, the one the hypernetwork is built "
                       f"from; for evaluate, the one trained and tested ({choices(MODELS)})")
    epochs: Integer = Field(gt=0, description="Training epochs (evaluate stretches a schedule "
                            "linearly to this length)")
    batch_size: Integer = Field(128, gt=0, description="Batch size of training (and of a "
                                "search's validation); with several processes, the global one")
    lr: Real = Field(gt=0, description="SGD learning rate (a search's α, of the hypernetwork)")
    lr_schedule: LrSchedule = Field("cosine", description="How the learning rate moves: cosine "
                                    "annealing to 0, ×0.1 at each of lr_milestones (step), or "
                                    "constant")
    lr_milestones: list[Milestone] = Field(default_factory=list, description="Epochs at which "
                                           "a step schedule multiplies the learning rate by "
                                           "0.1, increasing")
    momentum: Real = Field(0.9, ge=0, lt=1, description="SGD momentum")
    nesterov: bool = Field(True, description="Nesterov momentum")
    weight_decay: Real = Field(ge=0, description="Weight decay (a search's, of the "
                               "hypernetwork)")
    device: Device = Field("auto", description="Where to run (auto: CUDA when available, else "
                           "the CPU; mps: Apple GPUs)")
    compile: bool = Field(False, description="torch.compile the network: fused kernels, and on "
                          "CUDA its forward and backward replayed as CUDA graphs (mode "
                          "reduce-overhead); the first run pays the compilation (then "
                          "cached), so it pays off on long or repeated runs. Needs a C++ "
                          "compiler")
    precision: Precision = Field(
        "auto", description="Precision of the forward passes: auto is bf16 on GPUs with native "
        "bf16 (compute capability >= 8.0), fp16 with a gradient scaler on older GPUs such as "
        "V100 and T4, fp32 on the CPU; fp16 is CUDA only. The run's files record what auto "
        "resolved to; a resume must match")

    @field_validator("lr_milestones")
    @classmethod
    def _increasing_milestones(cls, milestones: list[int]) -> list[int]:
        if any(b <= a for a, b in itertools.pairwise(milestones)):
            raise ValueError(f"must increase strictly (the epochs at which the lr drops "
                             f"tenfold), got {milestones}")
        return milestones

    @model_validator(mode="after")
    def _step_needs_milestones(self) -> TrainingConfig:
        if self.lr_schedule == "step" and not self.lr_milestones:
            raise ValueError("lr_schedule 'step' needs lr_milestones")
        return self


class SearchConfig(TrainingConfig):
    """Everything that defines an HBA search (Algorithm 1)."""

    space: SpaceName = Field(DEFAULT_SPACE, description="Search space, what λ holds: "
                             + "; ".join(f"{name}: {summary}" for name, summary in SPACES.items()))
    method: MethodName = Field(DEFAULT_METHOD, description="The method's own settings, applied "
                               "over the dataset's preset (flags and the config file still win): "
                               + "; ".join(f"{name}: {m.summary}" for name, m in METHODS.items()))
    strategy: Strategy = Field(DEFAULT_STRATEGY, description="Weight sharing (paper §3.4): "
                               "which layers of the network become hyper-layers; the default "
                               "is the paper's")
    hyper_lr: Real = Field(gt=0, description="α': Adam learning rate of λ (constant)")
    sigma: Real = Field(1.0, ge=0, description="Std of the per-example perturbation ε of λ "
                        "(the default is the paper's)")
    perturbation_scale: Literal["fixed", "learned"] = Field(
        "fixed", description="The perturbation's std per hyperparameter: fixed at sigma (the "
        "paper), or learned from sigma on the λ step with an entropy bonus (Self-Tuning "
        "Networks; the λ step then sees perturbed λ too)")
    entropy_weight: Real = Field(1e-5, ge=0, description="τ, weight of the perturbation's "
                                 "entropy in a learned scale's objective (STN's default)")
    train_steps: Integer = Field(2, gt=0, description="T_train: hypernetwork steps per round")
    val_steps: Integer = Field(1, ge=0, description="T_val: λ steps per round")
    warmup_epochs: Integer = Field(0, ge=0, description="Epochs of hypernetwork steps only, "
                                   "before λ moves (the paper has none; Self-Tuning Networks' "
                                   "code uses 5)")
    val_bn_mode: Literal["train", "eval"] = Field(
        "train", description="BatchNorm mode on the λ step: train uses the validation batch's "
        "statistics, eval the running ones; train told good from bad better on digits")
    hyper_input: HyperInput = Field(
        "centred", description="What the hyper-layers are fed: centred is λ − λ0 (λ0: the "
        "starting λ), raw is λ itself (the paper's literal form); the same family of functions")
    perturbation: Literal["independent", "antithetic"] = Field(
        "independent", description="How the φ step's examples draw ε: independent (the paper), "
        "or antithetic: each image twice in the batch, with +ε and −ε and the same random "
        "augmentation draws, so the image's own share of the gradient cancels and what is left "
        "is how λ matters (each ε is still N(0, σ²); half as many distinct images per step)")
    hyper_v_init: Real = Field(0.01, ge=0, description="φV ~ N(0, (hyper_v_init/√|λ|)²) at "
                               "the start; 0: the hyper-layers start exactly at φ0 and learn "
                               "from the perturbed training examples which way λ matters")
    init: str | None = Field(None, json_schema_extra=PATH, description="Warm start: a schedule "
                             "file whose values λ starts from, to continue a search or start "
                             "from a policy you trust (default: every hyperparameter at "
                             "0.95·lo + 0.05·hi)")
    init_epoch: Integer = Field(0, ge=0, description="Which epoch of the init schedule λ "
                                "starts from (0-based)")
    seed: Seed = Field(0, description="Seed of initialisation, noise, augmentation and batch "
                       "order")

    @field_validator("val_size")
    @classmethod
    def _validation_images(cls, val_size: int | None) -> int | None:
        if val_size == 0:
            raise ValueError("Input should be greater than 0 (the λ steps need validation "
                             "images)")
        return val_size

    @model_validator(mode="after")
    def _learned_scale_starts_positive(self) -> SearchConfig:
        if self.perturbation_scale == "learned" and self.sigma == 0:
            raise ValueError("perturbation_scale 'learned' starts from sigma, which must be > 0")
        return self

    @model_validator(mode="after")
    def _warmup_before_the_end(self) -> SearchConfig:
        if self.warmup_epochs >= self.epochs:
            raise ValueError(f"warmup_epochs ({self.warmup_epochs}) must be < epochs "
                             f"({self.epochs})")
        return self


class EvaluateConfig(TrainingConfig):
    """Everything that defines training a target network with a policy."""

    policy: str = Field(description=f"A schedule file, or a baseline: {choices(BASELINES)}")
    seeds: list[Seed] = Field(default_factory=lambda: [0], min_length=1,
                              description="Seeds, one trained model each, no seed twice; the "
                              "results report mean ± std")
    replay: ReplayMode = Field("batched", description="How a schedule is applied: batched on "
                               "the device, or per-image in DataLoader workers (for comparison; "
                               "the hba space's policy only, other spaces replay batched)")
    workers: Integer | None = Field(None, ge=0, description="DataLoader workers per process for "
                                    "per-image policies (default: up to 8, by the CPUs)")
    eval_every: Integer = Field(0, ge=0, description="Also test the network every N epochs, "
                                "into epochs.csv (0: only at the end, as the paper)")
    init_weights: str | None = Field(None, json_schema_extra=PATH, description="A state dict "
                                     "to start the network from, e.g. a search's network.pt "
                                     "(same model) (default: a random init)")

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, seeds: list[int]) -> list[int]:
        repeated = next((s for i, s in enumerate(seeds) if s in seeds[:i]), None)
        if repeated is not None:
            raise ValueError(f"duplicate seed {repeated} (each seed trains one model; "
                             f"the mean ± std needs distinct ones)")
        return seeds


def lr_factor(step: int, cfg: TrainingConfig, steps_per_epoch: int) -> float:
    """Multiplier of the learning rate after ``step`` optimiser steps (it moves every step)."""
    if cfg.lr_schedule == "cosine":
        total = cfg.epochs * steps_per_epoch
        return 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))
    if cfg.lr_schedule == "step":
        epoch = step // steps_per_epoch
        return 0.1 ** sum(1 for m in cfg.lr_milestones if epoch >= m)
    return 1.0


# The fields some preset sets: their help names the preset as where the default comes from.
SEARCH_PRESET_FIELDS = frozenset(name for entry in DATASETS.values() for name in entry.search)
EVALUATE_PRESET_FIELDS = frozenset({"model"}.union(*EVALUATION_RECIPES.values(),
                                                    EVALUATION_FALLBACK))


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
    """Preset(dataset) ← the method's settings ← config file ← overrides (None values are
    ignored).

    ``dataset`` and ``method`` (flags) win over the file's; None takes the file's, else
    ``DEFAULT_DATASET`` and ``DEFAULT_METHOD``."""
    file_values = load_config_file(config_file)
    dataset = _flag_or_file(dataset, file_values, "dataset") or DEFAULT_DATASET
    method = _flag_or_file(overrides.pop("method", None), file_values, "method") \
        or DEFAULT_METHOD
    if method not in METHODS:
        raise HbaError(f"invalid setting method: unknown method '{method}' (known: "
                       f"{choices(METHODS)})")
    values = search_preset(dataset)
    values.update(METHODS[method].settings, method=method)
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
    for field, default in zip(("train_size", "val_size"), defaults, strict=True):
        if field in effective and effective[field] is None and default is not None:
            effective[field] = default
    return effective
