"""The schedule file format: round trip, every rejection as one HbaError line, linear stretching."""

from __future__ import annotations

import json
import math
import re
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest

from hbacli import space
from hbacli.errors import HbaError
from hbacli.schedule import (
    FORMAT_NAME,
    FORMAT_VERSION,
    Provenance,
    Schedule,
    load_schedule,
    save_schedule,
    stretch,
)

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "example-schedule.json"


def random_schedule(epochs: int = 12, seed: int = 0) -> Schedule:
    rng = np.random.default_rng(seed)
    probs = rng.uniform(0, 1, (epochs, space.NUM_OP_COPIES))
    low = np.array([oc.op.low if oc.op.has_magnitude else np.nan for oc in space.OP_COPIES])
    high = np.array([oc.op.high if oc.op.has_magnitude else np.nan for oc in space.OP_COPIES])
    mags = low + (high - low) * rng.uniform(0, 1, (epochs, space.NUM_OP_COPIES))
    provenance = Provenance(
        dataset="reduced-cifar10", train_size=4000, val_size=10000, model="wrn40_2",
        strategy="1st-bn", seed=3, epochs=epochs, search_seconds=421.5, device="cuda (H100)",
        versions={"hbacli": "0.1.0"}, command="hba search --dataset reduced-cifar10",
        config={"lr": 0.05, "lr_milestones": []},
        created=datetime(2025, 1, 2, 3, 4, 5, tzinfo=timezone.utc),
    )
    return Schedule.from_arrays(probs, mags, provenance)


def test_round_trip_is_exact(tmp_path):
    schedule = random_schedule()
    path = tmp_path / "s.json"
    save_schedule(schedule, path)
    loaded = load_schedule(path)
    assert loaded == schedule
    np.testing.assert_array_equal(loaded.probabilities(), schedule.probabilities())
    np.testing.assert_array_equal(loaded.magnitudes(), schedule.magnitudes())
    assert [p.name for p in tmp_path.iterdir()] == ["s.json"]  # no temp file left


def test_arrays_and_epoch_access():
    schedule = random_schedule(epochs=5)
    probs, mags = schedule.probabilities(), schedule.magnitudes()
    assert probs.shape == mags.shape == (5, 30)
    assert schedule.ops[6].label == "Invert#0" and schedule.ops[6].magnitude is None
    assert np.isnan(mags[:, 6]).all() and np.isfinite(mags[:, 4]).all()  # Rotate#0
    p, m = schedule.at_epoch(99)  # clipped to the last epoch
    np.testing.assert_array_equal(p, probs[-1])
    np.testing.assert_array_equal(m, mags[-1])
    np.testing.assert_array_equal(schedule.at_epoch(-3)[0], probs[0])


def test_file_describes_the_search_space_and_sampling():
    document = json.loads(EXAMPLE.read_text())
    assert document["format"] == FORMAT_NAME and document["version"] == FORMAT_VERSION
    assert document["sampling"]["k_values"] == [0, 1, 2]
    assert document["sampling"]["k_probabilities"] == [0.2, 0.3, 0.5]
    rotate = document["ops"][4]
    assert (rotate["op"], rotate["copy"], rotate["low"], rotate["high"], rotate["signed"]) == \
        ("Rotate", 0, 0.0, 30.0, True)
    assert document["ops"][5]["magnitude"] is None  # AutoContrast#0
    assert len(document["ops"]) == 30 and len(rotate["probability"]) == document["epochs"]


def test_from_arrays_snaps_float32_rounding_but_rejects_real_overshoot():
    probs = np.full((2, 30), 0.5)
    mags = np.tile([oc.op.high if oc.op.has_magnitude else np.nan for oc in space.OP_COPIES],
                   (2, 1))
    mags32 = mags.astype(np.float32).astype(np.float64)  # e.g. 1.9 → 1.9000000953674316
    assert (mags32 > mags).any()
    snapped = Schedule.from_arrays(probs, mags32).magnitudes()
    np.testing.assert_array_equal(snapped, np.minimum(mags32, mags))  # overshoot → the top
    with pytest.raises(ValueError, match=r"ops\[4\]\.magnitude\[0\] = 31 is outside"):
        Schedule.from_arrays(probs, np.where(np.arange(30) == 4, 31.0, mags))


# ---------------------------------------------------------------------------------------------
# Rejections: each is one line naming the file and the problem.


def example_document() -> dict:
    return json.loads(EXAMPLE.read_text())


def write(tmp_path: Path, document) -> Path:
    path = tmp_path / "schedule.json"
    path.write_text(document if isinstance(document, str) else json.dumps(document))
    return path


def with_change(change) -> dict:
    document = example_document()
    change(document)
    return document


def _set(path: tuple, value):
    def change(document):
        target = document
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return change


REJECTIONS = {
    "truncated": (lambda: EXAMPLE.read_text()[:5000], r"truncated JSON"),
    "not json": (lambda: "hello, I am not JSON\n", r"not valid JSON"),
    "json list": (lambda: "[1, 2]", r"not an hba-schedule file \(the JSON is a list"),
    "wrong format": (lambda: with_change(_set(("format",), "pba")), r"format is 'pba'"),
    "wrong version": (lambda: with_change(_set(("version",), 2)),
                      r"version 2 is not supported \(this hba reads version 1\)"),
    "string version": (lambda: with_change(_set(("version",), "1")),
                       r"'version' must be an integer"),
    "probability 1.7": (lambda: with_change(_set(("ops", 3, "probability", 12), 1.7)),
                        r"ops\[3\]\.probability\[12\] = 1\.7 is outside \[0, 1\]"),
    "negative probability": (lambda: with_change(_set(("ops", 0, "probability", 0), -0.1)),
                             r"ops\[0\]\.probability\[0\] = -0\.1 is outside \[0, 1\]"),
    "NaN": (lambda: json.dumps(with_change(_set(("ops", 7, "probability", 5), math.nan))),
            r"ops\[7\]\.probability\[5\] = nan is not a finite number"),
    "Infinity magnitude": (lambda: json.dumps(with_change(_set(("ops", 4, "magnitude", 1),
                                                               math.inf))),
                           r"ops\[4\]\.magnitude\[1\] = inf is not a finite number"),
    "magnitude out of range": (
        lambda: with_change(_set(("ops", 4, "magnitude", 9), 45.0)),
        r"ops\[4\]\.magnitude\[9\] = 45 is outside Rotate's range \[0, 30\] \(Rotate#0, epoch 9\)"),
    "unknown op": (lambda: with_change(_set(("ops", 2, "op"), "Twirl")),
                   r"ops\[2\]\.op: unknown operation 'Twirl'"),
    "length mismatch": (lambda: with_change(lambda d: d["ops"][9]["probability"].pop()),
                        r"ops\[9\]\.probability has 199 entries, expected one per epoch \(200\)"),
    "missing op copy": (lambda: with_change(lambda d: d["ops"].pop(20)),
                        r"ops: missing op copy AutoContrast#1$"),
    "duplicate op copy": (lambda: with_change(lambda d: d["ops"].__setitem__(20, d["ops"][4])),
                          r"op copy Rotate#0 appears 2 times"),
    "spec disagrees": (lambda: with_change(_set(("ops", 4, "high"), 45.0)),
                       r"ops\[4\]\.high = 45\.0 but Rotate's high is 30\.0"),
    "magnitude for prob-only op": (lambda: with_change(_set(("ops", 5, "magnitude"), [0.0] * 200)),
                                   r"ops\[5\]\.magnitude must be null: AutoContrast"),
    "string number": (lambda: with_change(_set(("ops", 1, "probability", 3), "0.5")),
                      r"ops\[1\]\.probability\[3\]: Input should be a valid number"),
    "unknown field": (lambda: with_change(_set(("colour",), "blue")), r"colour: unknown field"),
    "missing epochs": (lambda: with_change(lambda d: d.pop("epochs")), r"epochs: missing"),
}


@pytest.mark.parametrize("case", list(REJECTIONS))
def test_invalid_files_give_one_line_naming_file_and_problem(tmp_path, case):
    make, pattern = REJECTIONS[case]
    path = write(tmp_path, make())
    with pytest.raises(HbaError) as info:
        load_schedule(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    assert len(message) < 300
    assert re.search(pattern, message), message


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(HbaError, match=r"nope\.json: no such file$"):
        load_schedule(tmp_path / "nope.json")
    with pytest.raises(HbaError, match="is a directory"):
        load_schedule(tmp_path)


# ---------------------------------------------------------------------------------------------
# Stretching


def ramp_schedule(epochs: int) -> Schedule:
    """Rotate#0's probability and magnitude rise linearly from 0; everything else constant."""
    probs = np.full((epochs, 30), 0.2)
    mags = np.tile([oc.op.low if oc.op.has_magnitude else np.nan for oc in space.OP_COPIES],
                   (epochs, 1))
    probs[:, 4] = np.linspace(0, 1, epochs) if epochs > 1 else 0.3
    mags[:, 4] = np.linspace(0, 30, epochs) if epochs > 1 else 12.0
    return Schedule.from_arrays(probs, mags, Provenance(dataset="digits", epochs=epochs))


def test_stretch_is_linear_interpolation():
    schedule = ramp_schedule(3)  # Rotate#0: p = 0, 0.5, 1; m = 0, 15, 30
    longer = stretch(schedule, 5)
    assert longer.epochs == 5
    np.testing.assert_allclose(longer.probabilities()[:, 4], [0, 0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(longer.magnitudes()[:, 4], [0, 7.5, 15, 22.5, 30])
    assert np.isnan(longer.magnitudes()[:, 5]).all()
    np.testing.assert_allclose(longer.probabilities()[:, 0], 0.2)
    assert longer.provenance == schedule.provenance  # still describes the search

    # Non-aligned positions: new epoch e samples old position e * 2 / 3.
    np.testing.assert_allclose(stretch(schedule, 4).probabilities()[:, 4], [0, 1 / 3, 2 / 3, 1])
    # Squeezing keeps the ends and samples in between.
    np.testing.assert_allclose(stretch(ramp_schedule(5), 3).magnitudes()[:, 4], [0, 15, 30])


def test_stretch_identity_and_edge_lengths():
    schedule = random_schedule(epochs=9)
    same = stretch(schedule, 9)
    np.testing.assert_array_equal(same.probabilities(), schedule.probabilities())
    np.testing.assert_array_equal(same.magnitudes(), schedule.magnitudes())
    assert same == schedule
    first = stretch(schedule, 1)
    np.testing.assert_array_equal(first.probabilities()[0], schedule.probabilities()[0])
    constant = stretch(ramp_schedule(1), 4)
    np.testing.assert_allclose(constant.probabilities()[:, 4], 0.3)
    with pytest.raises(HbaError):
        stretch(schedule, 0)
