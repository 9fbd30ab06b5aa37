"""The schedule file: what a search produces and everything else reads ("hba-schedule").

Over 400 lines on purpose: the format is one idea (models, validation, reading, writing,
stretching), and splitting it would scatter the rules a reader checks a file against.

A schedule is the searched hyperparameters λ for every epoch of training, in physical units.
Version 2, the version hba writes, names its search space (``hbacli.spaces``) and carries any
space: for a space with the augmentation policy (``hba``), the sampling rule and the 30 op
copies of ``hbacli.space`` (15 operations × 2 copies, in ``OP_COPIES`` order), each with its
probability and magnitude per epoch (degrees, shear factor, fraction of image size, ...); for
every space, its scalars (``stn``: colour jitter, Cutout, dropout rates, ...) in the space's
order, each with its value per epoch. Version 1, the original format, has no ``space`` and no
``scalars``: it is always the ``hba`` space, and still loads exactly as before. The file is
self-describing: each op copy and scalar carries its range and unit, the sampling rule is spelled
out, and the provenance records how the schedule was made.

    {"format": "hba-schedule", "version": 2, "space": "stn", "epochs": E,
     "sampling": {...},              (only when the space has the policy)
     "ops": [...],                   (the 30 op copies with the policy, else [])
     "scalars": [{"name", "kind", "low", "high", "unit", "discrete", "values": [E numbers]}],
     "provenance": {...}}

Epochs are numbered from 0. Validation is strict, because a schedule silently misread would
train a network with the wrong hyperparameters: every value must be finite and inside its range,
every list must have one entry per epoch, and the ops and scalars must be exactly those of the
named space in this version of hba (names, order, ranges, units, kinds).

Stretching (``stretch``) maps a schedule of E_old epochs onto E_new epochs linearly, the paper's
rule: new epoch e takes the old schedule at position p = e·(E_old−1)/(E_new−1), interpolating
linearly between the two neighbouring old epochs. The first and last epochs map onto each other,
so E → E is the identity; a one-epoch target takes the old schedule's first epoch. Targets are
at most ``MAX_EPOCHS`` (10,000) epochs. A stretched schedule is version 2, of the same space.

pydantic and numpy only (no torch): reading and drawing schedules stays instant.
"""

from __future__ import annotations

import json
import math
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    model_serializer,
    model_validator,
)

from . import space
from .errors import HbaError
from .files import atomic_write_text
from .spaces import KINDS, SEARCH_SPACES, SearchSpace, get_space

FORMAT_NAME = "hba-schedule"
FORMAT_VERSION = 2              # the version hba writes
FORMAT_VERSIONS = (1, 2)        # the versions hba reads
VERSION_1_SPACE = "hba"         # a version 1 file names no space: it is always this one

# The most epochs ``stretch`` makes. The longest training in the paper (Shake-Shake on CIFAR,
# Table 9) is 1800 epochs and PBA/HBA schedules are a few hundred, so 10,000 leaves over 5× room;
# a stretched schedule costs about 1.1 KB of file and 6 KB of memory per epoch (11 MB and 60 MB
# at the limit), so an unbounded request such as 1,000,000 epochs meant a 1.1 GB file and 5.8 GB.
MAX_EPOCHS = 10_000
MAX_EPOCHS_REASON = "over 5x the longest training in the paper, Shake-Shake's 1800 epochs"

# The deepest JSON nesting a schedule file may have. A real schedule nests 4 levels (ops, their
# lists) and its provenance config a few more; deeper documents are refused at load, before
# Python's recursion limit (json, pydantic's serialiser at ~255 levels) turns them into tracebacks.
MAX_JSON_DEPTH = 64

SAMPLING_RULE = ("shuffled walk of the op copies without replacement, each gated by its own "
                 "probability, stop after K applied")

# Numbers are strict: a string such as "0.5" is an error, not a silently converted value.
Number = Annotated[float, Field(strict=True)]
Count = Annotated[int, Field(strict=True)]
# The range of a probability is documented in the JSON Schema; it is enforced by
# Schedule._check so that the message can name the exact entry.
ProbabilityValue = Annotated[float, Field(strict=True,
                                          json_schema_extra={"minimum": 0, "maximum": 1})]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Sampling(_Strict):
    """How the augmentation function draws ops for one image (PBA's Algorithm 1)."""

    k_values: list[Count] = Field(default_factory=lambda: list(space.K_VALUES),
                                  description="possible numbers K of ops applied per image")
    k_probabilities: list[Number] = Field(default_factory=lambda: list(space.K_PROBABILITIES),
                                          description="probability of each K")
    rule: Literal[SAMPLING_RULE] = Field(SAMPLING_RULE, description="how the K ops are chosen")


class OpSeries(_Strict):
    """One op copy: its search-space entry and its probability and magnitude per epoch."""

    op: str = Field(description="operation name (hbacli.space, the paper's Table 7)")
    copy_index: Count = Field(alias="copy", ge=0, description="which copy of the operation")
    low: Number | None = Field(description="smallest magnitude; null: probability-only op")
    high: Number | None = Field(description="largest magnitude; null: probability-only op")
    unit: str | None = Field(description="meaning of the magnitude")
    signed: bool = Field(description="the magnitude's sign is drawn at random (p = 0.5) per image")
    probability: list[ProbabilityValue] = Field(description="probability of applying, per epoch")
    magnitude: list[Number] | None = Field(
        description="magnitude in physical units, per epoch; null for probability-only ops")

    @property
    def label(self) -> str:
        return f"{self.op}#{self.copy_index}"


class Provenance(_Strict):
    """How the schedule was made. Describes the search, even after the schedule is stretched."""

    dataset: str
    train_size: Count | None = None
    val_size: Count | None = None
    image_size: Count | None = Field(None, description="side of the square images searched on")
    model: str | None = None
    strategy: str | None = None
    seed: Count | None = None
    epochs: Count | None = Field(None, description="epochs of the search")
    search_seconds: Number | None = Field(None, description="wall-clock time of the search")
    device: str | None = None
    versions: dict[str, str] | None = Field(None, description="package versions")
    command: str | None = Field(None, description="the command line that made the schedule")
    config: dict[str, Any] | None = Field(None, description="the resolved search configuration")
    created: datetime | None = None
    note: str | None = Field(None, description="free text, e.g. that this is an illustration")


class ScalarSeries(_Strict):
    """One scalar hyperparameter of the space (``hbacli.spaces.Scalar``) and its value per
    epoch. Its declaration is repeated in the file so that the file reads on its own."""

    name: str = Field(description="the hyperparameter's name in its space (hbacli.spaces)")
    kind: Literal[KINDS] = Field(description="what it sets: an augmentation strength, or a "
                                             "dropout rate inside the network")
    low: Number = Field(description="smallest value")
    high: Number = Field(description="largest value")
    unit: str = Field(description="meaning of the value")
    discrete: Annotated[bool, Field(strict=True)] = Field(
        description="used as floor(value) (a count or a length in pixels)")
    values: list[Number] = Field(description="value in its unit, per epoch")


def _space_rules_in_schema(schema: dict[str, Any]) -> None:
    """Write the rules of the two versions and of each space into the JSON Schema.

    The model validates both versions; its schema alone would allow any mix (a version 1 file
    with scalars, an stn file with ops). These conditions state what the loader checks, from
    the one declaration of each space (``hbacli.spaces``): version 1 has no space and no
    scalars; version 2 names its space and lists its scalars, in order, with their ranges.
    The loader stays the authority (ops' ranges and order are checked there only).
    """
    properties = schema["properties"]
    for name in ("space", "sampling", "scalars"):  # absent, never null: no default to show
        properties[name].pop("default", None)
    properties["space"]["enum"] = list(SEARCH_SPACES)
    rules: list[dict[str, Any]] = [
        {"if": {"properties": {"version": {"const": 1}}},
         "then": {"properties": {"space": False, "scalars": False}}},
        {"if": {"properties": {"version": {"const": 2}}}, "then": {"required": ["space",
                                                                               "scalars"]}},
    ]
    for search_space in SEARCH_SPACES.values():
        scalars = [{"properties": {
            "name": {"const": s.name}, "kind": {"const": s.kind}, "low": {"const": s.low},
            "high": {"const": s.high}, "unit": {"const": s.unit},
            "discrete": {"const": s.discrete},
            "values": {"items": {"minimum": s.low, "maximum": s.high}}}}
            for s in search_space.scalars]
        exactly = ({"prefixItems": scalars, "items": False, "minItems": len(scalars)}
                   if scalars else {"maxItems": 0})  # prefixItems may not be empty
        then: dict[str, Any] = {"scalars": exactly}
        if search_space.policy:
            then["ops"] = {"minItems": space.NUM_OP_COPIES, "maxItems": space.NUM_OP_COPIES}
        else:
            then.update(sampling=False, ops={"maxItems": 0})
        rules.append({"if": {"properties": {"space": {"const": search_space.name}},
                             "required": ["space"]},
                      "then": {"properties": then}})
    schema["allOf"] = rules


class Schedule(_Strict):
    """A schedule: the searched hyperparameters of a space, per epoch ("hba-schedule").

    Version 2 names its space: a space with the augmentation policy (hba) has the sampling rule
    and the 30 op copies (per-epoch probability and magnitude), one without it (stn) no sampling
    and no ops ([]); each lists its own scalars (hba none). Version 1 is the hba space without
    "space" and "scalars".
    """

    model_config = ConfigDict(json_schema_extra=_space_rules_in_schema)

    format: Literal[FORMAT_NAME]
    version: Literal[FORMAT_VERSIONS]
    # space, sampling and scalars are absent, never null, where a file has none (null is an
    # error): their None stands for "absent" and is not written (see _drop_absent).
    space: str = Field(None, description="the search space (hbacli.spaces); version 2 only: "
                                         "a version 1 schedule is the hba space")
    epochs: Count = Field(ge=1)
    sampling: Sampling = Field(None, description="only when the space has the augmentation "
                                                 "policy; left out there, the default rule")
    ops: list[OpSeries] = Field(description="the 30 op copies, in hbacli.space.OP_COPIES "
                                            "order, when the space has the policy; else []")
    scalars: list[ScalarSeries] = Field(None, description="version 2 only: the space's "
                                                          "scalars, in its order")
    provenance: Provenance | None = None

    @model_validator(mode="after")
    def _check(self) -> Schedule:
        problem = _first_problem(self)
        if problem is not None:
            raise ValueError(problem)
        if self.sampling is None and self.search_space.policy:
            self.sampling = Sampling()  # a file may leave out the one valid rule
        return self

    @model_serializer(mode="wrap")
    def _drop_absent(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        document = handler(self)
        for name in ("space", "sampling", "scalars"):
            if document.get(name, 0) is None:
                del document[name]
        return document

    @classmethod
    def from_values(cls, space_name: str, values: np.ndarray,
                    provenance: Provenance | None = None) -> Schedule:
        """A version 2 schedule of space ``space_name`` from (epochs, |λ|) physical values in
        the space's λ order (the policy's 54 entries as ``space.join_physical`` lays them out,
        then the scalars).

        Values a few float32 ulps outside their range (sigmoid rounding in the search) are
        clipped onto it; anything further out is rejected by validation (ValueError).
        """
        search_space = get_space(space_name)
        values = np.asarray(values, dtype=np.float64)
        if values.ndim != 2 or values.shape[1] != search_space.size:
            raise HbaError(f"the {search_space.name} space's schedule needs (epochs, "
                           f"{search_space.size}) values, got {values.shape}")
        values = _snap_into_range(values, search_space.low, search_space.high)
        ops = []
        if search_space.policy:
            probs, mags = space.split_physical(values[:, :search_space.policy_size])
            ops = [{"op": oc.op.name, "copy": oc.copy, "low": oc.op.low, "high": oc.op.high,
                    "unit": oc.op.unit, "signed": oc.op.signed,
                    "probability": probs[:, i].tolist(),
                    "magnitude": mags[:, i].tolist() if oc.op.has_magnitude else None}
                   for i, oc in enumerate(space.OP_COPIES)]
        scalars = [{"name": s.name, "kind": s.kind, "low": s.low, "high": s.high,
                    "unit": s.unit, "discrete": s.discrete, "values": column.tolist()}
                   for s, column in zip(search_space.scalars,
                                        values[:, search_space.scalar_slice].T)]
        return cls.model_validate({"format": FORMAT_NAME, "version": FORMAT_VERSION,
                                   "space": search_space.name, "epochs": values.shape[0],
                                   "ops": ops, "scalars": scalars, "provenance": provenance})

    @classmethod
    def from_arrays(cls, probabilities: np.ndarray, magnitudes: np.ndarray,
                    provenance: Provenance | None = None) -> Schedule:
        """A version 2 schedule of the hba space from (epochs, 30) arrays in physical units.

        Magnitudes of probability-only ops are ignored (NaN is fine). Snapping into range as
        ``from_values``.
        """
        probs = np.asarray(probabilities, dtype=np.float64)
        mags = np.asarray(magnitudes, dtype=np.float64)
        if probs.ndim != 2 or probs.shape[1] != space.NUM_OP_COPIES or mags.shape != probs.shape:
            raise ValueError(f"expected two (epochs, {space.NUM_OP_COPIES}) arrays, "
                             f"got {probs.shape} and {mags.shape}")
        return cls.from_values(VERSION_1_SPACE, space.join_physical(probs, mags), provenance)

    @property
    def space_name(self) -> str:
        """The search space's name ("hba" for version 1, which names none)."""
        return VERSION_1_SPACE if self.space is None else self.space

    @property
    def search_space(self) -> SearchSpace:
        return get_space(self.space_name)

    def values(self) -> np.ndarray:
        """(epochs, |λ|) physical values in the space's λ order (``from_values``' layout)."""
        parts = []
        if self.search_space.policy:
            parts.append(space.join_physical(self.probabilities(), self.magnitudes()))
        scalars = self.scalars or []
        parts.append(np.array([s.values for s in scalars], dtype=np.float64)
                     .reshape(len(scalars), self.epochs).T)
        return np.concatenate(parts, axis=1)

    def values_at(self, epoch: int) -> np.ndarray:
        """(|λ|,) physical values of one epoch (clipped into the schedule)."""
        return self.values()[self._clip_epoch(epoch)]

    def scalar_values(self) -> dict[str, np.ndarray]:
        """Each scalar's (epochs,) values by name, in the space's order ({} for hba)."""
        return {s.name: np.array(s.values, dtype=np.float64) for s in self.scalars or []}

    def scalars_at(self, epoch: int) -> dict[str, float]:
        """Each scalar's value at one epoch (clipped into the schedule), by name."""
        e = self._clip_epoch(epoch)
        return {s.name: float(s.values[e]) for s in self.scalars or []}

    def probabilities(self) -> np.ndarray:
        """(epochs, 30) probabilities; HbaError for a space without the policy."""
        self._require_policy()
        return np.array([series.probability for series in self.ops], dtype=np.float64).T

    def magnitudes(self) -> np.ndarray:
        """(epochs, 30) magnitudes in physical units; NaN for probability-only ops. HbaError
        for a space without the policy."""
        self._require_policy()
        nan_column = [math.nan] * self.epochs
        return np.array([series.magnitude if series.magnitude is not None else nan_column
                         for series in self.ops], dtype=np.float64).T

    def at_epoch(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities (30,) and magnitudes (30,) of one epoch (clipped into the schedule)."""
        e = self._clip_epoch(epoch)
        return self.probabilities()[e], self.magnitudes()[e]

    def _clip_epoch(self, epoch: int) -> int:
        return min(max(int(epoch), 0), self.epochs - 1)

    def _require_policy(self) -> None:
        """Probabilities and magnitudes exist only where the space has the op policy."""
        if not self.search_space.policy:
            raise HbaError(f"{_no_policy(self.space_name)}: this schedule holds its "
                           f"{len(self.search_space.scalars)} scalars, not op probabilities "
                           f"and magnitudes")


def _no_policy(space_name: str) -> str:
    return f"the {space_name} space has no augmentation policy"


def _snap_into_range(values: np.ndarray, low, high) -> np.ndarray:
    """``values`` with entries at most 1e-6 of the range outside [low, high] moved onto it
    (``low``/``high`` scalars or arrays broadcasting along the last axis)."""
    tolerance = 1e-6 * (np.asarray(high) - np.asarray(low))
    clipped = np.clip(values, low, high)
    return np.where(np.abs(values - clipped) <= tolerance, clipped, values)


def _fmt(value: float) -> str:
    return f"{value:g}"


def _first_problem(schedule: Schedule) -> str | None:
    """The first thing wrong with a parsed schedule, as a message naming the entry; else None."""
    problem = _version_problem(schedule)
    if problem is not None:
        return problem
    search_space = schedule.search_space
    if search_space.policy:
        problem = (_sampling_problem(schedule.sampling) or _ops_problem(schedule.ops)
                   or _values_problem(schedule.ops, schedule.epochs))
    else:
        problem = _no_policy_problem(schedule, search_space.name)
    return problem or _scalars_problem(schedule.scalars or [], search_space, schedule.epochs)


def _version_problem(schedule: Schedule) -> str | None:
    """Fields the version has or lacks: version 1 has no space and no scalars, version 2 names
    a known space and lists its scalars."""
    given = schedule.model_fields_set
    if schedule.version == 1:
        for name in ("space", "scalars"):
            if name in given:
                return f"{name}: unknown field in version 1 (version 2 names the search space)"
        return None
    for name in ("space", "scalars"):
        if name not in given:
            return f"{name}: missing"
    try:
        get_space(schedule.space)
    except HbaError as exc:
        return f"space: {exc}"
    return None


def _sampling_problem(sampling: Sampling | None) -> str | None:
    if sampling is None:  # absent: the default rule
        return None
    if (tuple(sampling.k_values) != space.K_VALUES
            or not np.allclose(sampling.k_probabilities, space.K_PROBABILITIES)):
        return (f"sampling: K {sampling.k_values} with probabilities {sampling.k_probabilities} "
                f"differs from this version's K {list(space.K_VALUES)} with probabilities "
                f"{list(space.K_PROBABILITIES)}")
    return None


def _no_policy_problem(schedule: Schedule, space_name: str) -> str | None:
    """A space without the policy has no sampling rule and no op copies."""
    if schedule.sampling is not None:
        return f"sampling: {_no_policy(space_name)}, so no sampling rule (leave the field out)"
    if schedule.ops:
        return (f"ops: {_no_policy(space_name)}, so ops must be an empty list "
                f"(got {len(schedule.ops)} op copies)")
    return None


def _ops_problem(ops: list[OpSeries]) -> str | None:
    """Unknown ops, missing or duplicate copies, wrong order, specs that disagree with space.py."""
    for i, series in enumerate(ops):
        if series.op not in space.OP_BY_NAME:
            return (f"ops[{i}].op: unknown operation '{series.op}' "
                    f"(known: {', '.join(space.OP_NAMES)})")
    labels = [series.label for series in ops]
    expected = [oc.label for oc in space.OP_COPIES]
    for label in labels:
        if labels.count(label) > 1:
            return f"ops: op copy {label} appears {labels.count(label)} times"
    missing = [label for label in expected if label not in labels]
    if missing:
        return f"ops: missing op cop{'ies' if len(missing) > 1 else 'y'} {', '.join(missing)}"
    extra = [label for label in labels if label not in expected]
    if extra:
        return f"ops: op copies {', '.join(extra)} are not in the search space"
    for i, (label, want) in enumerate(zip(labels, expected)):
        if label != want:
            return f"ops[{i}] is {label}, expected {want} (ops must be in hbacli.space order)"
    for i, series in enumerate(ops):
        spec = space.OP_BY_NAME[series.op]
        for field in ("low", "high", "unit", "signed"):
            if getattr(series, field) != getattr(spec, field):
                return (f"ops[{i}].{field} = {getattr(series, field)!r} but {series.op}'s "
                        f"{field} is {getattr(spec, field)!r} in this version of hba")
    return None


def _values_problem(ops: list[OpSeries], epochs: int) -> str | None:
    """Lists of the wrong length, NaN/inf, values outside their range."""
    for i, series in enumerate(ops):
        spec = space.OP_BY_NAME[series.op]
        if spec.has_magnitude and series.magnitude is None:
            return f"ops[{i}].magnitude is null but {series.label} has a magnitude"
        if not spec.has_magnitude and series.magnitude is not None:
            return f"ops[{i}].magnitude must be null: {series.op} has no magnitude"
        problem = _series_problem(f"ops[{i}].probability", series.probability, epochs, 0.0, 1.0,
                                  "", series.label)
        if problem is None and spec.has_magnitude:
            problem = _series_problem(f"ops[{i}].magnitude", series.magnitude, epochs, spec.low,
                                      spec.high, f"{series.op}'s range ", series.label)
        if problem is not None:
            return problem
    return None


def _scalars_problem(scalars: list[ScalarSeries], search_space: SearchSpace,
                     epochs: int) -> str | None:
    """Scalars unknown to the space, missing, repeated or out of order, declarations that
    disagree with spaces.py, and their values (as ``_values_problem``)."""
    names = [series.name for series in scalars]
    expected = list(search_space.scalar_names)
    where = f"the {search_space.name} space"
    for i, name in enumerate(names):
        if name not in expected:
            known = f"its scalars: {', '.join(expected)}" if expected else "it has no scalars"
            return f"scalars[{i}].name: unknown scalar '{name}' in {where} ({known})"
    for name in names:
        if names.count(name) > 1:
            return f"scalars: {name} appears {names.count(name)} times"
    missing = [name for name in expected if name not in names]
    if missing:
        return f"scalars: missing {', '.join(missing)} (of {where}'s {len(expected)} scalars)"
    for i, (name, want) in enumerate(zip(names, expected)):
        if name != want:
            return f"scalars[{i}] is {name}, expected {want} (scalars must be in {where}'s order)"
    for i, (series, spec) in enumerate(zip(scalars, search_space.scalars)):
        for field in ("kind", "low", "high", "unit", "discrete"):
            if getattr(series, field) != getattr(spec, field):
                return (f"scalars[{i}].{field} = {getattr(series, field)!r} but {spec.name}'s "
                        f"{field} is {getattr(spec, field)!r} in {where}")
        problem = _series_problem(f"scalars[{i}].values", series.values, epochs, spec.low,
                                  spec.high, f"{spec.name}'s range ", spec.name)
        if problem is not None:
            return problem
    return None


def _series_problem(entry: str, values: list[float], epochs: int, low: float, high: float,
                    range_name: str, label: str) -> str | None:
    """One per-epoch list: its length, then each value finite and inside [low, high]."""
    if len(values) != epochs:
        return f"{entry} has {len(values)} entries, expected one per epoch ({epochs})"
    array = np.asarray(values, dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(array))
    if bad.size:
        e = bad[0]
        return f"{entry}[{e}] = {_fmt(array[e])} is not a finite number ({label}, epoch {e})"
    bad = np.flatnonzero((array < low) | (array > high))
    if bad.size:
        e = bad[0]
        return (f"{entry}[{e}] = {_fmt(array[e])} is outside "
                f"{range_name}[{_fmt(low)}, {_fmt(high)}] ({label}, epoch {e})")
    return None


# ---------------------------------------------------------------------------------------------
# Files


def load_schedule(path: str | Path) -> Schedule:
    """Read and validate a schedule file. Every problem becomes a one-line HbaError."""
    path = Path(path)
    document = _read_json(path)
    try:
        _check_header(document)
        return Schedule.model_validate(document)
    except ValueError as exc:  # pydantic's ValidationError is a ValueError too
        raise HbaError(f"{path}: {_summarise(exc)}") from None


def save_schedule(schedule: Schedule, path: str | Path) -> None:
    """Write a schedule atomically (a crash never leaves a half-written file)."""
    atomic_write_text(path, schedule_json_text(schedule))


def schedule_json_text(schedule: Schedule) -> str:
    """The file's text: indented JSON with each per-epoch list on one line (readable diffs)."""
    return _compact_json(schedule.model_dump(mode="json", by_alias=True)) + "\n"


def _compact_json(value: Any, indent: str = "") -> str:
    inner = indent + "  "
    if isinstance(value, dict) and value:
        items = [f"{inner}{json.dumps(k)}: {_compact_json(v, inner)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + indent + "}"
    if isinstance(value, list) and any(isinstance(v, (dict, list)) for v in value):
        items = [inner + _compact_json(v, inner) for v in value]
        return "[\n" + ",\n".join(items) + "\n" + indent + "]"
    return json.dumps(value, allow_nan=False, ensure_ascii=False)


def _read_json(path: Path) -> Any:
    try:
        if path.is_dir():  # asked first: a directory without read permission is still one
            raise HbaError(f"{path}: is a directory, not a schedule file")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise HbaError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise HbaError(f"{path}: is a directory, not a schedule file") from None
    except UnicodeDecodeError:
        raise HbaError(f"{path}: not a schedule (not UTF-8 text, so not JSON)") from None
    except OSError as exc:
        raise HbaError(f"{path}: cannot read ({exc.strerror})") from None
    too_deep = (f"{path}: not a schedule (JSON nested more than {MAX_JSON_DEPTH} levels deep; "
                f"a schedule needs fewer than 10)")
    try:
        document = json.loads(text)
    except RecursionError:
        raise HbaError(too_deep) from None
    except json.JSONDecodeError as exc:
        if not text.strip():
            raise HbaError(f"{path}: the file is empty") from None
        if _is_truncation(text, exc):
            raise HbaError(f"{path}: truncated JSON (the file ends at line {exc.lineno} "
                           f"before the document is complete)") from None
        raise HbaError(f"{path}: not valid JSON ({exc.msg}: line {exc.lineno} "
                       f"column {exc.colno})") from None
    if _nesting_exceeds(document, MAX_JSON_DEPTH):
        raise HbaError(too_deep)
    return document


def _nesting_exceeds(document: Any, limit: int) -> bool:
    """True when lists and objects nest more than ``limit`` levels (walked without recursion)."""
    stack = [(document, 1)] if isinstance(document, (dict, list)) else []
    while stack:
        value, depth = stack.pop()
        children = value.values() if isinstance(value, dict) else value
        containers = [child for child in children if isinstance(child, (dict, list))]
        if containers and depth >= limit:
            return True
        stack.extend((child, depth + 1) for child in containers)
    return False


def _is_truncation(text: str, exc: json.JSONDecodeError) -> bool:
    """True when nothing but a cut-off token (number, word, string) follows the error."""
    rest = text[exc.pos:].strip()
    at_start = exc.pos <= len(text) - len(text.lstrip())
    if at_start or exc.msg == "Extra data" or "\n" in rest:
        return False
    return exc.msg.startswith("Unterminated string") or not any(c in rest for c in "]},:")


def _check_header(document: Any) -> None:
    """Format and version first: a foreign file gets a message about that, not its fields."""
    if not isinstance(document, dict):
        kind = "null" if document is None else type(document).__name__
        raise ValueError(f"not an {FORMAT_NAME} file (the JSON is a {kind}, expected an object)")
    if document.get("format") != FORMAT_NAME:
        found = f"format is {document['format']!r}" if "format" in document else "no 'format' field"
        raise ValueError(f"not an {FORMAT_NAME} file ({found})")
    version = document.get("version")
    if type(version) is not int:
        raise ValueError(f"'version' must be an integer, got {version!r}")
    if version not in FORMAT_VERSIONS:
        raise ValueError(f"schedule format version {version} is not supported "
                         f"(this hba reads versions {' and '.join(map(str, FORMAT_VERSIONS))})")


def _summarise(exc: ValueError) -> str:
    """One line for the first problem (pydantic reports every problem; one is enough to act on)."""
    if not isinstance(exc, ValidationError):
        return str(exc)
    errors = exc.errors(include_url=False)
    first = errors[0]
    more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
    message = first["msg"].removeprefix("Value error, ")
    location = _location(first["loc"])
    if first["type"] == "value_error" and not location:
        return message + more
    if first["type"] == "missing":
        return f"{location}: missing" + more
    if first["type"] == "extra_forbidden":
        return f"{location}: unknown field" + more
    got = first.get("input")
    shown = "" if isinstance(got, (dict, list)) else f" (got {_short_repr(got)})"
    return f"{location}: {message}{shown}{more}"


def _location(loc: tuple) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _short_repr(value: Any, limit: int = 40) -> str:
    text = repr(value).replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---------------------------------------------------------------------------------------------
# Stretching


def stretch(schedule: Schedule, epochs: int) -> Schedule:
    """The schedule linearly stretched (or squeezed) to ``epochs`` epochs (see module docstring):
    every value of λ, op copies and scalars alike; version 2, of the same space."""
    if epochs < 1:
        raise HbaError(f"cannot stretch a schedule to {epochs} epochs (need at least 1)")
    if epochs > MAX_EPOCHS:
        raise HbaError(f"cannot stretch a schedule to {epochs} epochs: the limit is {MAX_EPOCHS} "
                       f"({MAX_EPOCHS_REASON})")
    old_positions = np.arange(schedule.epochs, dtype=np.float64)
    new_positions = stretch_positions(schedule.epochs, epochs)

    def resample(columns: np.ndarray) -> np.ndarray:
        return np.stack([np.interp(new_positions, old_positions, columns[:, j])
                         for j in range(columns.shape[1])], axis=1)

    return Schedule.from_values(schedule.space_name, resample(schedule.values()),
                                provenance=schedule.provenance)


def stretch_positions(old_epochs: int, new_epochs: int) -> np.ndarray:
    """Where in the old schedule (fractional epoch) each new epoch samples."""
    if new_epochs == 1:
        return np.zeros(1)
    return np.arange(new_epochs, dtype=np.float64) * (old_epochs - 1) / (new_epochs - 1)
