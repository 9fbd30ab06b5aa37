"""The schedule file: what a search produces and everything else reads ("hba-schedule", version 1).

Over 400 lines on purpose: the format is one idea (models, validation, reading, writing,
stretching), and splitting it would scatter the rules a reader checks a file against.

A schedule is the augmentation policy for every epoch of training: for each of the 30 op copies
of ``hbacli.space`` (15 operations × 2 copies, in ``OP_COPIES`` order) the probability of applying
it and its magnitude, in physical units (degrees, shear factor, fraction of image size, ...).
The file is self-describing: each op copy carries its range, unit and sign rule, the sampling
rule is spelled out, and the provenance records how the schedule was made.

Epochs are numbered from 0. Validation is strict, because a schedule silently misread would
train a network with the wrong augmentation: every value must be finite and inside its range,
every list must have one entry per epoch, and the ops must be exactly the search space of this
version of hba.

Stretching (``stretch``) maps a schedule of E_old epochs onto E_new epochs linearly, the paper's
rule: new epoch e takes the old schedule at position p = e·(E_old−1)/(E_new−1), interpolating
linearly between the two neighbouring old epochs. The first and last epochs map onto each other,
so E → E is the identity; a one-epoch target takes the old schedule's first epoch. Targets are
at most ``MAX_EPOCHS`` (10,000) epochs.

pydantic and numpy only (no torch): reading and drawing schedules stays instant.
"""

from __future__ import annotations

import json
import math
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from . import space
from .errors import HbaError
from .files import atomic_write_text

FORMAT_NAME = "hba-schedule"
FORMAT_VERSION = 1

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


class Schedule(_Strict):
    """An augmentation schedule: per-epoch probability and magnitude of every op copy."""

    format: Literal[FORMAT_NAME]
    version: Literal[FORMAT_VERSION]
    epochs: Count = Field(ge=1)
    sampling: Sampling = Field(default_factory=Sampling)
    ops: list[OpSeries] = Field(description="the 30 op copies, in hbacli.space.OP_COPIES order")
    provenance: Provenance | None = None

    @model_validator(mode="after")
    def _check(self) -> Schedule:
        problem = _first_problem(self)
        if problem is not None:
            raise ValueError(problem)
        return self

    @classmethod
    def from_arrays(cls, probabilities: np.ndarray, magnitudes: np.ndarray,
                    provenance: Provenance | None = None) -> Schedule:
        """Build a schedule from (epochs, 30) arrays in physical units.

        Magnitudes of probability-only ops are ignored (NaN is fine). Values a few float32
        ulps outside their range (sigmoid rounding in the search) are clipped onto it; anything
        further out is rejected by validation.
        """
        probs = _snap_into_range(np.asarray(probabilities, dtype=np.float64), 0.0, 1.0)
        mags = np.asarray(magnitudes, dtype=np.float64)
        if probs.ndim != 2 or probs.shape[1] != space.NUM_OP_COPIES or mags.shape != probs.shape:
            raise ValueError(f"expected two (epochs, {space.NUM_OP_COPIES}) arrays, "
                             f"got {probs.shape} and {mags.shape}")
        ops = []
        for i, oc in enumerate(space.OP_COPIES):
            spec = oc.op
            magnitude = None
            if spec.has_magnitude:
                magnitude = _snap_into_range(mags[:, i], spec.low, spec.high).tolist()
            ops.append({"op": spec.name, "copy": oc.copy, "low": spec.low, "high": spec.high,
                        "unit": spec.unit, "signed": spec.signed,
                        "probability": probs[:, i].tolist(), "magnitude": magnitude})
        return cls.model_validate({"format": FORMAT_NAME, "version": FORMAT_VERSION,
                                   "epochs": probs.shape[0], "ops": ops, "provenance": provenance})

    def probabilities(self) -> np.ndarray:
        """(epochs, 30) probabilities."""
        return np.array([series.probability for series in self.ops], dtype=np.float64).T

    def magnitudes(self) -> np.ndarray:
        """(epochs, 30) magnitudes in physical units; NaN for probability-only ops."""
        nan_column = [math.nan] * self.epochs
        return np.array([series.magnitude if series.magnitude is not None else nan_column
                         for series in self.ops], dtype=np.float64).T

    def at_epoch(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities (30,) and magnitudes (30,) of one epoch (clipped into the schedule)."""
        e = min(max(int(epoch), 0), self.epochs - 1)
        return self.probabilities()[e], self.magnitudes()[e]


def _snap_into_range(values: np.ndarray, low: float, high: float) -> np.ndarray:
    tolerance = 1e-6 * (high - low)
    clipped = np.clip(values, low, high)
    return np.where(np.abs(values - clipped) <= tolerance, clipped, values)


def _fmt(value: float) -> str:
    return f"{value:g}"


def _first_problem(schedule: Schedule) -> str | None:
    """The first thing wrong with a parsed schedule, as a message naming the entry; else None."""
    sampling = schedule.sampling
    if (tuple(sampling.k_values) != space.K_VALUES
            or not np.allclose(sampling.k_probabilities, space.K_PROBABILITIES)):
        return (f"sampling: K {sampling.k_values} with probabilities {sampling.k_probabilities} "
                f"differs from this version's K {list(space.K_VALUES)} with probabilities "
                f"{list(space.K_PROBABILITIES)}")
    return _ops_problem(schedule.ops) or _values_problem(schedule.ops, schedule.epochs)


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
        columns = [("probability", series.probability, 0.0, 1.0)]
        if spec.has_magnitude:
            if series.magnitude is None:
                return f"ops[{i}].magnitude is null but {series.label} has a magnitude"
            columns.append(("magnitude", series.magnitude, spec.low, spec.high))
        elif series.magnitude is not None:
            return f"ops[{i}].magnitude must be null: {series.op} has no magnitude"
        for name, values, low, high in columns:
            if len(values) != epochs:
                return (f"ops[{i}].{name} has {len(values)} entries, "
                        f"expected one per epoch ({epochs})")
            array = np.asarray(values, dtype=np.float64)
            entry = f"ops[{i}].{name}"
            bad = np.flatnonzero(~np.isfinite(array))
            if bad.size:
                e = bad[0]
                return (f"{entry}[{e}] = {_fmt(array[e])} is not a finite number "
                        f"({series.label}, epoch {e})")
            bad = np.flatnonzero((array < low) | (array > high))
            if bad.size:
                e = bad[0]
                where = "" if name == "probability" else f"{series.op}'s range "
                return (f"{entry}[{e}] = {_fmt(array[e])} is outside "
                        f"{where}[{_fmt(low)}, {_fmt(high)}] ({series.label}, epoch {e})")
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
    if version != FORMAT_VERSION:
        raise ValueError(f"schedule format version {version} is not supported "
                         f"(this hba reads version {FORMAT_VERSION})")


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
    """The schedule linearly stretched (or squeezed) to ``epochs`` epochs (see module docstring)."""
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

    return Schedule.from_arrays(resample(schedule.probabilities()),
                                resample(schedule.magnitudes()),
                                provenance=schedule.provenance)


def stretch_positions(old_epochs: int, new_epochs: int) -> np.ndarray:
    """Where in the old schedule (fractional epoch) each new epoch samples."""
    if new_epochs == 1:
        return np.zeros(1)
    return np.arange(new_epochs, dtype=np.float64) * (old_epochs - 1) / (new_epochs - 1)
