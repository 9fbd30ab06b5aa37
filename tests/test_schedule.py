"""The schedule file format: round trip, every rejection as one HbaError line, linear stretching;
version 2 of any search space (hba, stn) and version 1 files as they were written before it."""

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
    schedule_json_text,
    stretch,
)
from hbacli.spaces import get_space

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "example-schedule.json"
STN = get_space("stn")


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
    assert document["format"] == FORMAT_NAME and document["version"] == FORMAT_VERSION == 2
    assert document["space"] == "hba" and document["scalars"] == []
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
    "wrong version": (lambda: with_change(_set(("version",), 3)),
                      r"version 3 is not supported \(this hba reads versions 1 and 2\)"),
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


# ---------------------------------------------------------------------------------------------
# Version 1: files written before version 2 load as the hba space, exactly as before.


def version_1_document(probs: np.ndarray, mags: np.ndarray, sampling: bool = True) -> dict:
    """A schedule in the version 1 layout, written out field by field as hba wrote it then."""
    ops = []
    for i, oc in enumerate(space.OP_COPIES):
        spec = oc.op
        ops.append({"op": spec.name, "copy": oc.copy, "low": spec.low, "high": spec.high,
                    "unit": spec.unit, "signed": spec.signed,
                    "probability": probs[:, i].tolist(),
                    "magnitude": mags[:, i].tolist() if spec.has_magnitude else None})
    document = {"format": "hba-schedule", "version": 1, "epochs": len(probs)}
    if sampling:
        document["sampling"] = {
            "k_values": [0, 1, 2], "k_probabilities": [0.2, 0.3, 0.5],
            "rule": "shuffled walk of the op copies without replacement, each gated by its own "
                    "probability, stop after K applied"}
    document["ops"] = ops
    document["provenance"] = {"dataset": "digits", "epochs": len(probs)}
    return document


@pytest.mark.parametrize("sampling", [True, False], ids=["with sampling", "sampling left out"])
def test_version_1_file_loads_as_the_hba_space(tmp_path, sampling):
    reference = random_schedule(epochs=4)
    probs, mags = reference.probabilities(), reference.magnitudes()
    path = write(tmp_path, version_1_document(probs, mags, sampling))
    loaded = load_schedule(path)
    assert (loaded.version, loaded.space_name, loaded.search_space.name) == (1, "hba", "hba")
    np.testing.assert_array_equal(loaded.probabilities(), probs)
    np.testing.assert_array_equal(loaded.magnitudes(), mags)
    np.testing.assert_array_equal(loaded.values(), space.join_physical(probs, mags))
    np.testing.assert_array_equal(loaded.values(), reference.values())
    np.testing.assert_array_equal(loaded.values_at(99), reference.values()[-1])
    assert loaded.scalar_values() == {} and loaded.scalars_at(0) == {}
    assert loaded.sampling is not None  # the one rule, also when left out
    # Saved again, it stays a version 1 file: no space, no scalars.
    again = json.loads(schedule_json_text(loaded))
    assert again["version"] == 1 and "space" not in again and "scalars" not in again
    assert again["ops"] == version_1_document(probs, mags)["ops"]
    # Stretched, it becomes a version 2 schedule of the hba space with the same values.
    stretched = stretch(loaded, loaded.epochs)
    assert (stretched.version, stretched.space) == (2, "hba")
    np.testing.assert_array_equal(stretched.values(), loaded.values())


def test_the_real_version_1_example_still_loads():
    """examples/digits-schedule.json was written by a search before version 2 existed."""
    path = EXAMPLE.parent / "digits-schedule.json"
    assert json.loads(path.read_text())["version"] == 1
    schedule = load_schedule(path)
    assert schedule.space_name == "hba" and schedule.values().shape == (schedule.epochs, 54)


# ---------------------------------------------------------------------------------------------
# Version 2: any space (stn: 15 scalars, no policy).


def stn_values(epochs: int = 6, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return STN.low + (STN.high - STN.low) * rng.uniform(0, 1, (epochs, STN.size))


def stn_schedule(epochs: int = 6, seed: int = 0) -> Schedule:
    return Schedule.from_values("stn", stn_values(epochs, seed),
                                Provenance(dataset="cifar10", model="alexnet", epochs=epochs))


def test_stn_round_trip_is_exact(tmp_path):
    values = stn_values()
    schedule = stn_schedule()
    path = tmp_path / "stn.json"
    save_schedule(schedule, path)
    document = json.loads(path.read_text())
    assert (document["version"], document["space"], document["ops"]) == (2, "stn", [])
    assert "sampling" not in document
    assert [s["name"] for s in document["scalars"]] == list(STN.scalar_names)
    cutlength = document["scalars"][STN.scalar_names.index("cutlength")]
    assert {k: v for k, v in cutlength.items() if k != "values"} == {
        "name": "cutlength", "kind": "augmentation", "low": 0.0, "high": 24.0,
        "unit": "Cutout side in pixels (floored)", "discrete": True}
    loaded = load_schedule(path)
    assert loaded == schedule
    assert (loaded.space_name, loaded.search_space) == ("stn", STN)
    np.testing.assert_array_equal(loaded.values(), values)
    np.testing.assert_array_equal(loaded.values_at(2), values[2])
    np.testing.assert_array_equal(loaded.values_at(-5), values[0])  # clipped like at_epoch
    assert list(loaded.scalar_values()) == list(STN.scalar_names)
    np.testing.assert_array_equal(loaded.scalar_values()["hue"],
                                  values[:, STN.scalar_index("hue")])
    assert loaded.scalars_at(99) == dict(zip(STN.scalar_names, values[-1].tolist()))


@pytest.mark.parametrize("method", ["probabilities", "magnitudes", "at_epoch"])
def test_stn_schedule_has_no_op_policy(method):
    args = (0,) if method == "at_epoch" else ()
    with pytest.raises(HbaError, match="the stn space has no augmentation policy"):
        getattr(stn_schedule(), method)(*args)


def test_from_values_checks_the_shape_and_snaps_like_from_arrays():
    with pytest.raises(HbaError, match=r"the stn space's schedule needs \(epochs, 15\) values, "
                                       r"got \(3, 54\)"):
        Schedule.from_values("stn", np.zeros((3, 54)))
    with pytest.raises(HbaError, match="unknown search space 'pba' .*hba, stn"):
        Schedule.from_values("pba", np.zeros((3, 15)))
    top = np.tile(STN.high, (2, 1))
    top32 = top.astype(np.float32).astype(np.float64)  # 0.3 → 0.30000001192092896, ...
    assert (top32 > top).any()
    np.testing.assert_array_equal(Schedule.from_values("stn", top32).values(),
                                  np.minimum(top32, top))  # overshoot → the top
    hue = STN.scalar_index("hue")
    with pytest.raises(ValueError, match=r"scalars\[5\]\.values\[0\] = 0\.6 is outside hue's"):
        Schedule.from_values("stn", np.where(np.arange(15) == hue, 0.6, top))
    # The hba space through from_values is from_arrays' schedule.
    reference = random_schedule(epochs=3)
    probs, mags = reference.probabilities(), reference.magnitudes()
    assert Schedule.from_values("hba", space.join_physical(probs, mags),
                                reference.provenance) == reference


def stn_document() -> dict:
    return json.loads(schedule_json_text(stn_schedule()))


def stn_with(change) -> dict:
    document = stn_document()
    change(document)
    return document


def _swap(i: int, j: int):
    def change(document):
        scalars = document["scalars"]
        scalars[i], scalars[j] = scalars[j], scalars[i]
    return change


STN_REJECTIONS = {
    "unknown scalar name": (stn_with(_set(("scalars", 5, "name"), "hues")),
                            r"scalars\[5\]\.name: unknown scalar 'hues' in the stn space "
                            r"\(its scalars: dropout0, .*, fcdropout1\)"),
    "scalars out of order": (stn_with(_swap(5, 6)),
                             r"scalars\[5\] is contrast, expected hue \(scalars must be in the "
                             r"stn space's order\)$"),
    "value out of range": (stn_with(_set(("scalars", 5, "values", 2), 0.7)),
                           r"scalars\[5\]\.values\[2\] = 0\.7 is outside hue's range \[0, 0\.5\] "
                           r"\(hue, epoch 2\)$"),
    "negative dropout": (stn_with(_set(("scalars", 0, "values", 0), -0.01)),
                         r"scalars\[0\]\.values\[0\] = -0\.01 is outside dropout0's range"),
    "NaN": (json.dumps(stn_with(_set(("scalars", 12, "values", 4), math.nan))),
            r"scalars\[12\]\.values\[4\] = nan is not a finite number \(cutholes, epoch 4\)"),
    "wrong length": (stn_with(lambda d: d["scalars"][11]["values"].pop()),
                     r"scalars\[11\]\.values has 5 entries, expected one per epoch \(6\)$"),
    "unknown space": (stn_with(_set(("space",), "autoaugment")),
                      r"space: unknown search space 'autoaugment' \(known: hba, stn\)$"),
    "space missing": (stn_with(lambda d: d.pop("space")), r"space: missing$"),
    "space null": (stn_with(_set(("space",), None)), r"space: Input should be a valid string"),
    "ops given": (stn_with(_set(("ops",), example_document()["ops"])),
                  r"ops: the stn space has no augmentation policy, so ops must be an empty list "
                  r"\(got 30 op copies\)$"),
    "sampling given": (stn_with(_set(("sampling",), example_document()["sampling"])),
                       r"sampling: the stn space has no augmentation policy, so no sampling rule"),
    "scalars missing": (stn_with(lambda d: d.pop("scalars")), r"scalars: missing$"),
    "one scalar missing": (stn_with(lambda d: d["scalars"].pop(12)),
                           r"scalars: missing cutholes \(of the stn space's 15 scalars\)$"),
    "scalar twice": (stn_with(lambda d: d["scalars"].__setitem__(6, d["scalars"][5])),
                     r"scalars: hue appears 2 times$"),
    "range disagrees": (stn_with(_set(("scalars", 5, "high"), 1.0)),
                        r"scalars\[5\]\.high = 1\.0 but hue's high is 0\.5 in the stn space$"),
    "kind disagrees": (stn_with(_set(("scalars", 5, "kind"), "dropout")),
                       r"scalars\[5\]\.kind = 'dropout' but hue's kind is 'augmentation'"),
    "unknown kind": (stn_with(_set(("scalars", 5, "kind"), "colour")),
                     r"scalars\[5\]\.kind: Input should be 'augmentation' or 'dropout'"),
    "discrete disagrees": (stn_with(_set(("scalars", 11, "discrete"), False)),
                           r"scalars\[11\]\.discrete = False but cutlength's discrete is True"),
    "unit disagrees": (stn_with(_set(("scalars", 11, "unit"), "pixels")),
                       r"scalars\[11\]\.unit = 'pixels' but cutlength's unit is"),
    "string value": (stn_with(_set(("scalars", 3, "values", 1), "0.5")),
                     r"scalars\[3\]\.values\[1\]: Input should be a valid number"),
    "hba with a scalar": (with_change(_set(("scalars",), stn_document()["scalars"][5:6])),
                          r"scalars\[0\]\.name: unknown scalar 'hue' in the hba space \(it has "
                          r"no scalars\)$"),
    "hba without scalars": (with_change(lambda d: d.pop("scalars")), r"scalars: missing$"),
    "version 1 with a space": (with_change(lambda d: d.update(version=1)),
                               r"space: unknown field in version 1 \(version 2 names the search "
                               r"space\)$"),
    "version 1 with scalars": (with_change(lambda d: (d.update(version=1), d.pop("space"))),
                               r"scalars: unknown field in version 1"),
}


@pytest.mark.parametrize("case", list(STN_REJECTIONS))
def test_invalid_version_2_files_give_one_line_naming_the_entry(tmp_path, case):
    document, pattern = STN_REJECTIONS[case]
    path = write(tmp_path, document)
    with pytest.raises(HbaError) as info:
        load_schedule(path)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{path}: ") and len(message) < 300
    assert re.search(pattern, message), message


def test_stretch_interpolates_scalars_and_keeps_the_space():
    values = np.tile(STN.start_values(), (3, 1))
    hue, cut = STN.scalar_index("hue"), STN.scalar_index("cutlength")
    values[:, hue] = [0.0, 0.25, 0.5]
    values[:, cut] = [0.0, 24.0, 12.0]
    schedule = Schedule.from_values("stn", values, Provenance(dataset="cifar10", epochs=3))
    longer = stretch(schedule, 5)
    assert (longer.version, longer.space_name, longer.epochs) == (2, "stn", 5)
    np.testing.assert_allclose(longer.scalar_values()["hue"], [0, 0.125, 0.25, 0.375, 0.5])
    np.testing.assert_allclose(longer.scalar_values()["cutlength"], [0, 12, 24, 18, 12])
    np.testing.assert_allclose(longer.scalar_values()["dropout0"], 0.05)
    assert longer.provenance == schedule.provenance
    assert stretch(schedule, 3) == schedule
    np.testing.assert_array_equal(stretch(schedule, 1).values(), values[:1])
