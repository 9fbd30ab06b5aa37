"""`hba export`: a schedule in another format — json, csv or PBA's schedule text.

All formats are made from the validated schedule, stretched first when ``epochs`` is given
(see ``hbacli.schedule.stretch``; at most ``MAX_EPOCHS``, 10,000). The whole output is built in
memory and written atomically, so a failure never leaves a file behind. json and csv take a
schedule of any search space; pba only one of the hba space (PBA replays hba's op policy only).

json
    The schedule itself (format "hba-schedule"), validated and re-written: in its own version
    (1 or 2), or as version 2 when stretched.
csv
    One row per epoch (numbered from 0): ``epoch``, then, when the space has the augmentation
    policy, ``<op>#<copy>_p`` (probability) and ``<op>#<copy>_m`` (magnitude, physical units) for
    the 30 op copies in ``hbacli.space`` order (the magnitude cell is empty for the
    probability-only ops AutoContrast, Invert, Equalize), then one column per scalar of the
    space, named as the scalar, in the space's order (its value in its unit; e.g. ``hue``,
    ``cutlength``). The hba space has no scalars, the stn space no op columns.
pba
    Only for the hba space. The schedule log that PBA (arcelien/pba) replays with
    ``pba/train.py --use_hp_policy --hp_policy FILE.txt --hp_policy_epochs E``, E being the
    number of epochs of the exported schedule. The file name must end in ``.txt``: PBA reads
    ``--hp_policy`` as a schedule file only then (otherwise as a comma-separated list of ints).
    PBA stretches the schedule to its own ``--epochs`` N by repeating each segment
    ``int(length·N/E)`` times and padding with the last policy, which is only approximate when N
    is not a multiple of E; exporting with ``epochs`` = N and passing ``--hp_policy_epochs N``
    replays every epoch exactly. Each line is a Python literal
    ``[target_trial, clone_trial, target_epoch, clone_epoch, old_config, new_config]`` with
    ``config = {'hp_policy': [60 ints]}``; PBA's ``parse_log`` turns consecutive lines into
    (epochs, policy) segments. A line is written where the policy changes, its ``clone_epoch``
    being the first epoch of the new policy, so PBA uses each line's policy from that epoch until
    the next line's.

    ``hp_policy`` holds copy 0 of PBA's 15 ops and then copy 1 (``parse_policy`` splits the
    list in halves), each op as a pair (probability × 10, level) in the order PBA decodes them
    (``PBA_OP_ORDER``). Probabilities become tenths 0..10 (nearest, halves up). Each of our
    magnitudes becomes the level whose PBA value is nearest (ties to the lower level), with PBA's
    level → value rules (PARAMETER_MAX = 10, images 32×32 as in PBA):

    ============  ===============================  ================================
    op            PBA value at level L             in our units
    ============  ===============================  ================================
    Shear X/Y     0.03·L                           shear factor (same)
    Translate X/Y int(L) pixels (absolute)         L/32 of the image size
    Rotate        int(3·L) degrees                 degrees (same)
    Solarize      threshold 256 − int(25.6·L)      m = int(25.6·L) (pixels ≥ 256 − m)
    Posterize     keeps 4 − int(0.4·L) bits        removes 4 + int(0.4·L) bits
    Color etc.    factor 0.1 + 0.18·L              factor (same)
    Cutout        int(2·L) pixels side             2·L/32 of the image size
    ============  ===============================  ================================

    Levels go up to 10, the most PBA's ``apply_policy`` accepts (its own search only explores
    0..9), so our top magnitudes stay reachable: 30°, factor 1.9, Solarize 255 → 256.
    Posterize stops at 9 (removes 7 bits): level 10 keeps 0 bits, which Pillow refuses
    (ValueError). Where PBA's scale is narrower than ours it saturates: translate beyond 10 px
    (0.31 of 32 px) becomes 10 px, and PBA's Posterize always removes at least 4 bits (our
    milder values become level 0). Probability-only ops get level 0.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

from . import space
from .errors import HbaError
from .files import atomic_write_text
from .schedule import (
    MAX_EPOCHS,
    MAX_EPOCHS_REASON,
    Schedule,
    load_schedule,
    schedule_json_text,
    stretch,
)

# The order in which PBA decodes each copy's 15 (probability, level) pairs: ``parse_policy``
# (pba/data_utils.py) walks ``HP_TRANSFORM_NAMES``, the keys of ``NAME_TO_TRANSFORM``, an
# OrderedDict over ``HP_TRANSFORMS`` in pba/augmentation_transforms_hp.py (arcelien/pba at
# 950397f0afd8562cd05564f11c669ac6567b281d). Earlier commits listed the ops in another order
# but keyed them through a plain dict, whose Python 2 iteration order is this one; so PBA's
# published schedules and its current code both decode in this order.
PBA_OP_ORDER: tuple[str, ...] = (
    "Rotate", "TranslateX", "TranslateY", "Brightness", "Color", "Invert", "Sharpness",
    "Posterize", "ShearX", "Solarize", "ShearY", "Equalize", "AutoContrast", "Cutout",
    "Contrast",
)
PBA_PARAMETER_MAX = 10  # the highest level PBA's apply_policy accepts
PBA_LEVELS = np.arange(PBA_PARAMETER_MAX + 1)
PBA_POSTERIZE_MAX_LEVEL = 9  # level 10 would keep 0 bits, which Pillow refuses
PBA_IMAGE_SIZE = 32  # PBA's transforms are written for 32×32 images
PBA_FILE_SUFFIX = ".txt"  # PBA reads --hp_policy as a schedule file only with this ending


def _pba_float(maxval: float) -> np.ndarray:  # PBA's float_parameter
    return PBA_LEVELS * maxval / PBA_PARAMETER_MAX


def _pba_int(maxval: int) -> np.ndarray:  # PBA's int_parameter
    return np.floor(PBA_LEVELS * maxval / PBA_PARAMETER_MAX)


_ENHANCE = 0.1 + _pba_float(1.8)
# Value of every PBA level for each op with a magnitude, in our physical units.
PBA_LEVEL_VALUES: dict[str, np.ndarray] = {
    "ShearX": _pba_float(0.3),
    "ShearY": _pba_float(0.3),
    "TranslateX": _pba_int(10) / PBA_IMAGE_SIZE,
    "TranslateY": _pba_int(10) / PBA_IMAGE_SIZE,
    "Rotate": _pba_int(30),
    "Solarize": _pba_int(256),
    "Posterize": (4 + _pba_int(4))[: PBA_POSTERIZE_MAX_LEVEL + 1],
    "Color": _ENHANCE, "Contrast": _ENHANCE, "Brightness": _ENHANCE, "Sharpness": _ENHANCE,
    "Cutout": _pba_int(20) / PBA_IMAGE_SIZE,
}
PBA_TRIAL = "hba"
PBA_SPACE = "hba"  # PBA's hp_policy is exactly this space's op policy


def export_schedule(schedule_path: str | Path, fmt: str, out: str | Path,
                    epochs: int | None = None) -> None:
    """Write the schedule at ``schedule_path`` to ``out`` in format ``fmt`` (json, csv, pba)."""
    writer = _FORMATS.get(fmt)
    if writer is None:
        raise HbaError(f"unknown export format '{fmt}' (valid: {', '.join(_FORMATS)})")
    if epochs is not None and epochs < 1:
        raise HbaError(f"--epochs must be at least 1, got {epochs}")
    if epochs is not None and epochs > MAX_EPOCHS:
        raise HbaError(f"--epochs must be at most {MAX_EPOCHS}, got {epochs} "
                       f"({MAX_EPOCHS_REASON})")
    if fmt == "pba" and not Path(out).name.endswith(PBA_FILE_SUFFIX):
        raise HbaError(f"--out must end in {PBA_FILE_SUFFIX} for --format pba (PBA reads "
                       f"--hp_policy as a schedule file only then), got {out}")
    schedule = load_schedule(schedule_path)
    if epochs is not None:
        schedule = stretch(schedule, epochs)
    text = writer(schedule)
    try:
        atomic_write_text(out, text)
    except OSError as exc:
        raise HbaError(f"cannot write {out}: {exc.strerror or exc}") from None


def csv_text(schedule: Schedule) -> str:
    """One row per epoch: epoch, the op copies' (probability, magnitude) pairs if the space has
    the policy, then the scalars (see the module docstring)."""
    header = ["epoch"]
    policy = schedule.search_space.policy
    if policy:
        labels = [oc.label for oc in space.OP_COPIES]
        header += [f"{label}_{kind}" for label in labels for kind in ("p", "m")]
        probs, mags = schedule.probabilities(), schedule.magnitudes()
    scalars = schedule.scalar_values()
    header += list(scalars)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for epoch in range(schedule.epochs):
        row: list[object] = [epoch]
        if policy:
            for p, m in zip(probs[epoch], mags[epoch]):
                row += [float(p), "" if math.isnan(m) else float(m)]
        row += [float(values[epoch]) for values in scalars.values()]
        writer.writerow(row)
    return buffer.getvalue()


def pba_probability(probability: float) -> int:
    """Probability in tenths, halves rounded up (so the initial 0.05 stays alive as 0.1)."""
    return int(np.floor(10 * probability + 0.5))


def pba_level(op: str, magnitude: float) -> int:
    """The PBA level (0..10, Posterize 0..9) whose value is nearest to ``magnitude``.

    0 for probability-only ops, whose level PBA ignores.
    """
    values = PBA_LEVEL_VALUES.get(op)
    if values is None:
        return 0
    return int(np.argmin(np.abs(values - magnitude)))  # argmin takes the first: ties go low


def pba_policy(probabilities: np.ndarray, magnitudes: np.ndarray) -> list[int]:
    """One epoch as PBA's 60-integer hp_policy vector."""
    index = {(oc.op.name, oc.copy): i for i, oc in enumerate(space.OP_COPIES)}
    vector: list[int] = []
    for copy in range(space.NUM_COPIES):
        for name in PBA_OP_ORDER:
            i = index[(name, copy)]
            vector += [pba_probability(probabilities[i]), pba_level(name, magnitudes[i])]
    return vector


def pba_text(schedule: Schedule) -> str:
    """PBA's schedule log (see the module docstring); HbaError for a space other than hba."""
    if schedule.space_name != PBA_SPACE:
        raise HbaError(f"pba export needs the {PBA_SPACE} space; this schedule's space is "
                       f"{schedule.space_name}")
    probs, mags = schedule.probabilities(), schedule.magnitudes()
    policies = [pba_policy(probs[e], mags[e]) for e in range(schedule.epochs)]
    starts = [e for e in range(schedule.epochs) if e == 0 or policies[e] != policies[e - 1]]
    lines = []
    previous = policies[0]
    for start in starts:
        line = [PBA_TRIAL, PBA_TRIAL, start, start,
                {"hp_policy": previous}, {"hp_policy": policies[start]}]
        lines.append(repr(line))
        previous = policies[start]
    return "\n".join(lines) + "\n"


_FORMATS: dict[str, Callable[[Schedule], str]] = {
    "json": schedule_json_text,
    "csv": csv_text,
    "pba": pba_text,
}
