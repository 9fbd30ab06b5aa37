"""`hba inspect` and `hba export` through the real CLI: output, files, and bad input."""

from __future__ import annotations

import ast
import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from hbacli import space
from hbacli.cli import app
from hbacli.schedule import Provenance, Schedule, load_schedule, save_schedule, stretch
from hbacli.spaces import get_space

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "example-schedule.json"
VERSION_1 = ROOT / "examples" / "digits-schedule.json"  # written before version 2
STN = get_space("stn")
runner = CliRunner()


def hba(*args: str):
    return runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "80", "NO_COLOR": "1"})


def test_cli_modules_do_not_import_torch():
    code = ("import sys, hbacli.cli, hbacli.schedule, hbacli.plots, hbacli.export, "
            "hbacli.schemas, hbacli.space, hbacli.ops_pil, hbacli.presets; "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# ---------------------------------------------------------------------------------------------
# inspect


def test_inspect_draws_figure_4_in_80_columns_and_writes_png(tmp_path):
    png = tmp_path / "figure.png"
    result = hba("inspect", EXAMPLE, "--png", png)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    too_long = [line for line in lines if len(line) > 80]
    assert not too_long, too_long
    text = result.stdout
    assert "(a) sum of normalised magnitudes" in text and "(b) probability" in text
    for oc in space.OP_COPIES:  # one heat-map row per op copy
        assert sum(line.split()[:1] == [oc.label] for line in lines) == 1, oc.label
    assert any(ch in text for ch in "⠁⠂⠄⡀⠈⠐⠠⢀")  # the braille line plot
    assert "reduced-cifar10" in text and "illustration" in text
    assert "top 5 op copies" in text and "end (epoch 199)" in text
    assert f"wrote {png}" in text

    with Image.open(png) as image:
        image.verify()
    with Image.open(png) as image:
        assert image.format == "PNG" and image.mode == "RGB"
        assert 800 <= image.width <= 2000 and 800 <= image.height <= 2000
        colours = np.asarray(image).reshape(-1, 3)
        assert len(np.unique(colours, axis=0)) > 100  # a heat map, not a blank page


def test_inspect_heat_map_tracks_the_probabilities(tmp_path):
    """The row of the most probable op copy at the end is darkest at the end in the text map."""
    result = hba("inspect", EXAMPLE)
    schedule = load_schedule(EXAMPLE)
    best = space.OP_COPIES[int(np.argmax(schedule.probabilities()[-1]))].label
    row = next(line for line in result.stdout.splitlines() if line.split()[:1] == [best])
    assert row.rstrip().endswith("█")
    assert row[16:18].strip() in ("", "░")  # it starts at 0.05, the lightest shades


# ---------------------------------------------------------------------------------------------
# export


def test_export_json_stretches(tmp_path):
    out = tmp_path / "long.json"
    result = hba("export", EXAMPLE, "--format", "json", "--epochs", 400, "--out", out)
    assert result.exit_code == 0, result.output
    exported = load_schedule(out)
    assert exported.epochs == 400
    assert exported == stretch(load_schedule(EXAMPLE), 400)
    same = tmp_path / "same.json"
    assert hba("export", EXAMPLE, "-f", "json", "--out", same).exit_code == 0
    assert load_schedule(same) == load_schedule(EXAMPLE)


def test_export_csv_agrees_with_schedule(tmp_path):
    out = tmp_path / "s.csv"
    result = hba("export", EXAMPLE, "--format", "csv", "--out", out)
    assert result.exit_code == 0, result.output
    schedule = load_schedule(EXAMPLE)
    with out.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == schedule.epochs
    assert [int(r["epoch"]) for r in rows] == list(range(schedule.epochs))
    probs, mags = schedule.probabilities(), schedule.magnitudes()
    for i, oc in enumerate(space.OP_COPIES):
        column_p = [float(r[f"{oc.label}_p"]) for r in rows]
        column_m = [r[f"{oc.label}_m"] for r in rows]
        np.testing.assert_array_equal(column_p, probs[:, i])
        if oc.op.has_magnitude:
            np.testing.assert_array_equal([float(m) for m in column_m], mags[:, i])
        else:
            assert set(column_m) == {""}


# PBA's facts, restated independently of hbacli.export from arcelien/pba at commit
# 950397f0afd8562cd05564f11c669ac6567b281d.
# The order in which pba/data_utils.py `parse_policy` decodes each copy's 15 (probability,
# level) pairs: the variable `HP_TRANSFORMS` of pba/augmentation_transforms_hp.py, read through
# the OrderedDict `NAME_TO_TRANSFORM` (its keys are `HP_TRANSFORM_NAMES`).
PBA_ORDER = ["Rotate", "TranslateX", "TranslateY", "Brightness", "Color", "Invert", "Sharpness",
             "Posterize", "ShearX", "Solarize", "ShearY", "Equalize", "AutoContrast", "Cutout",
             "Contrast"]


# Level → value rules of pba/augmentation_transforms.py (`float_parameter`, `int_parameter`,
# PARAMETER_MAX = 10), in our units; 32×32 images.
def _pba_int(level, maxval):
    return int(level * maxval / 10)


PBA_VALUE = {
    "ShearX": lambda L: L * 0.3 / 10, "ShearY": lambda L: L * 0.3 / 10,
    "TranslateX": lambda L: _pba_int(L, 10) / 32, "TranslateY": lambda L: _pba_int(L, 10) / 32,
    "Rotate": lambda L: _pba_int(L, 30), "Solarize": lambda L: _pba_int(L, 256),
    "Posterize": lambda L: 4 + _pba_int(L, 4), "Cutout": lambda L: _pba_int(L, 20) / 32,
    **{op: (lambda L: 0.1 + L * 1.8 / 10) for op in ("Color", "Contrast", "Brightness",
                                                     "Sharpness")},
}


def pba_max_level(name: str) -> int:
    """`apply_policy` accepts levels 0..PARAMETER_MAX = 10; Posterize 10 keeps 0 bits, which
    Pillow refuses."""
    return 9 if name == "Posterize" else 10


def replay_pba_log(text: str, epochs: int) -> list[list[tuple[str, int, float, int]]]:
    """What PBA makes of the file with --hp_policy_epochs = --epochs = ``epochs``: per epoch, the
    30 (op, copy, probability, level) of `parse_log_schedule` (multiplier 1) + `parse_policy`."""
    raw = []
    for line in text.splitlines(keepends=True):  # parse_log: JSON, else a Python literal
        try:
            raw.append(json.loads(line))
        except ValueError:
            raw.append(ast.literal_eval(line))
    for i in range(len(raw) - 1):
        assert raw[i][0] == raw[i + 1][1], "PBA would drop the lines up to here"
    segments = [(raw[0][3], raw[0][4]["hp_policy"])]  # old config until the first clone epoch
    for i in range(len(raw) - 1):
        assert raw[i + 1][3] >= raw[i][3]
        segments.append((raw[i + 1][3] - raw[i][3], raw[i][5]["hp_policy"]))
    segments.append((epochs - raw[-1][3], raw[-1][5]["hp_policy"]))
    assert sum(n for n, _ in segments) == epochs
    per_epoch = [vector for n, vector in segments for _ in range(n)]

    def parse_policy(half, copy):
        assert len(half) == 2 * len(PBA_ORDER)
        return [(name, copy, half[2 * k] / 10, half[2 * k + 1])
                for k, name in enumerate(PBA_ORDER)]

    decoded = []
    for vector in per_epoch:  # data_utils splits the list in halves, one per copy
        split = len(vector) // 2
        decoded.append(parse_policy(vector[:split], 0) + parse_policy(vector[split:], 1))
    return decoded


def pba_mismatches(policies, schedule) -> list[tuple[int, str, str]]:
    """(epoch, op copy, what) wherever PBA's decoded policy is not the schedule's: a probability
    off by more than rounding to tenths, a level outside PBA's range or not the nearest one."""
    probs, mags = schedule.probabilities(), schedule.magnitudes()
    index = {(oc.op.name, oc.copy): i for i, oc in enumerate(space.OP_COPIES)}
    wrong = []
    assert len(policies) == schedule.epochs
    for epoch, policy in enumerate(policies):
        assert sorted((name, copy) for name, copy, _, _ in policy) == sorted(index)
        for name, copy, probability, level in policy:
            i, label = index[(name, copy)], f"{name}#{copy}"
            if abs(probability - probs[epoch, i]) > 0.05 + 1e-9:
                wrong.append((epoch, label, "probability"))
            if not (isinstance(level, int) and 0 <= level <= pba_max_level(name)):
                wrong.append((epoch, label, "level range"))
            elif name in PBA_VALUE:
                errors = [abs(PBA_VALUE[name](L) - mags[epoch, i])
                          for L in range(pba_max_level(name) + 1)]
                if errors[level] > min(errors) + 1e-9:
                    wrong.append((epoch, label, "level"))
    return wrong


@pytest.mark.parametrize("epochs", [None, 120])
def test_export_pba_replays_to_the_schedule(tmp_path, epochs):
    """Every epoch, decoded in PBA's order, holds the schedule's own values."""
    out = tmp_path / "schedule.txt"
    stretch_args = () if epochs is None else ("--epochs", epochs)
    result = hba("export", EXAMPLE, "--format", "pba", *stretch_args, "--out", out)
    assert result.exit_code == 0, result.output
    schedule = load_schedule(EXAMPLE)
    if epochs is not None:
        schedule = stretch(schedule, epochs)
    policies = replay_pba_log(out.read_text(), schedule.epochs)
    assert pba_mismatches(policies, schedule) == []
    changes = sum(a != b for a, b in zip(policies, policies[1:]))
    assert len(out.read_text().splitlines()) == changes + 1  # a line per policy change


def constant_schedule(directory: Path, magnitudes: dict[str, float]) -> Path:
    """The example with every magnitude constant: ``magnitudes[op]``, else the op's low end."""
    document = json.loads(EXAMPLE.read_text())
    for series in document["ops"]:
        if series["magnitude"] is not None:
            value = magnitudes.get(series["op"], series["low"])
            series["magnitude"] = [value] * document["epochs"]
    source = directory / "constant.json"
    source.write_text(json.dumps(document))
    return source


def exported_levels(tmp_path, magnitudes: dict[str, float]) -> dict[tuple[str, int], int]:
    source = constant_schedule(tmp_path, magnitudes)
    out = tmp_path / "constant.txt"
    assert hba("export", source, "--format", "pba", "--out", out).exit_code == 0
    policy = replay_pba_log(out.read_text(), load_schedule(source).epochs)[0]
    return {(name, copy): level for name, copy, _, level in policy}


def test_export_pba_levels_of_known_magnitudes(tmp_path):
    """Hand-checked: 15° → level 5, factor 1.0 → 5, 6 bits removed → 5, 0.1 of 32 px (3.2 px)
    → 2 (4 px)."""
    level = exported_levels(tmp_path, {"Rotate": 15.0, "Color": 1.0, "Posterize": 6.0,
                                       "Cutout": 0.1})
    for copy in (0, 1):
        assert (level["Rotate", copy], level["Color", copy], level["Posterize", copy],
                level["Cutout", copy], level["ShearX", copy]) == (5, 5, 5, 2, 0)


def test_export_pba_reaches_level_10_but_posterize_stops_at_9(tmp_path):
    """Our top magnitudes become PBA's level 10, the most apply_policy accepts, except Posterize:
    our 8 bits removed become PBA's 7 (levels 8 and 9 both; ties go low), as level 10 would keep
    0 bits, which Pillow refuses."""
    top = {op.name: op.high for op in space.OPS if op.has_magnitude}
    level = exported_levels(tmp_path, top)
    for (name, copy), value in level.items():
        if name not in PBA_VALUE:
            assert value == 0
        elif name == "Posterize":
            assert value <= 9 and PBA_VALUE[name](value) == 7, value
        elif name == "Cutout":  # 0.2 of 32 px = 6.4 px: PBA's 6 px
            assert value == 3
        else:
            assert value == 10, (name, copy, value)


# ---------------------------------------------------------------------------------------------
# Bad input: exit 2, one line on stderr starting with "error:", no output file.


def broken_files(directory: Path) -> dict[str, Path]:
    text = EXAMPLE.read_text()
    document = json.loads(text)
    cases: dict[str, str] = {"truncated": text[: len(text) // 2], "not JSON": "no schedule here\n"}
    for name, change in {
        "wrong version": lambda d: d.__setitem__("version", 3),
        "probability 1.7": lambda d: d["ops"][3]["probability"].__setitem__(12, 1.7),
        "NaN": lambda d: d["ops"][3]["probability"].__setitem__(12, math.nan),
        "unknown op": lambda d: d["ops"][0].__setitem__("op", "Twirl"),
        "length mismatch": lambda d: d["ops"][0]["magnitude"].append(0.1),
    }.items():
        changed = json.loads(text)
        change(changed)
        cases[name] = json.dumps(changed)
    assert document  # the example itself parsed
    paths = {}
    for name, content in cases.items():
        path = directory / f"{name.replace(' ', '-')}.json"
        path.write_text(content)
        paths[name] = path
    paths["missing file"] = directory / "does-not-exist.json"
    return paths


def assert_user_error(result, *expected: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    for part in expected:
        assert part in lines[0], lines[0]


def test_broken_files_fail_cleanly(tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    outputs = tmp_path / "out"
    outputs.mkdir()
    expected = {"truncated": "truncated JSON", "not JSON": "not valid JSON",
                "wrong version": "version 3 is not supported",
                "probability 1.7": "ops[3].probability[12] = 1.7 is outside [0, 1]",
                "NaN": "is not a finite number", "unknown op": "unknown operation 'Twirl'",
                "length mismatch": "201 entries", "missing file": "no such file"}
    for name, path in broken_files(inputs).items():
        assert_user_error(hba("inspect", path, "--png", outputs / "x.png"), path.name,
                          expected[name])
        for fmt, suffix in (("json", "json"), ("csv", "csv"), ("pba", "txt")):
            assert_user_error(hba("export", path, "--format", fmt,
                                  "--out", outputs / f"x.{suffix}"), path.name, expected[name])
    assert list(outputs.iterdir()) == []  # no output, no temp file


def test_bad_export_arguments(tmp_path):
    assert_user_error(hba("export", EXAMPLE, "--format", "yaml", "--out", tmp_path / "x"),
                      "unknown export format 'yaml'", "json, csv, pba")
    assert_user_error(hba("export", EXAMPLE, "--format", "csv", "--epochs", 0,
                          "--out", tmp_path / "x"), "--epochs")
    assert_user_error(hba("export", EXAMPLE, "--format", "csv", "--out", tmp_path), "cannot write")
    assert_user_error(hba("inspect", EXAMPLE, "--png", tmp_path), "cannot write")
    assert list(tmp_path.iterdir()) == []


def test_export_pba_needs_a_txt_name(tmp_path):
    """PBA reads --hp_policy as a schedule file only when the name ends in .txt."""
    for name in ("schedule.pba", "schedule", "schedule.TXT", "schedule.txt.bak"):
        assert_user_error(hba("export", EXAMPLE, "--format", "pba", "--out", tmp_path / name),
                          "--out must end in .txt for --format pba", name)
    assert list(tmp_path.iterdir()) == []
    assert hba("export", EXAMPLE, "-f", "pba", "--out", tmp_path / "schedule.txt").exit_code == 0


def test_example_is_reproducible():
    """examples/make_example_schedule.py regenerates the checked-in example exactly."""
    import runpy

    from hbacli.schedule import schedule_json_text

    script = runpy.run_path(str(ROOT / "examples" / "make_example_schedule.py"))
    assert schedule_json_text(script["example_schedule"]()) == EXAMPLE.read_text()


@pytest.mark.parametrize("epochs", [1, 2, 7])
def test_inspect_short_schedules(tmp_path, epochs):
    out = tmp_path / "short.json"
    assert hba("export", EXAMPLE, "-f", "json", "--epochs", epochs, "--out", out).exit_code == 0
    result = hba("inspect", out, "--png", tmp_path / "short.png")
    assert result.exit_code == 0, result.output
    assert max(len(line) for line in result.stdout.splitlines()) <= 80
    assert (tmp_path / "short.png").stat().st_size > 1000


# ---------------------------------------------------------------------------------------------
# Schedules of a space without the op policy (stn), and version 1 files


def stn_file(directory: Path, epochs: int = 12) -> Path:
    """An stn schedule: each scalar ramps from its start to its own fraction of its range."""
    t = np.linspace(0, 1, epochs)[:, None]
    start = (STN.start_values() - STN.low) / (STN.high - STN.low)
    fraction = start + (np.linspace(0.2, 0.9, STN.size) - start) * t
    values = STN.low + (STN.high - STN.low) * fraction
    path = directory / "stn.json"
    save_schedule(Schedule.from_values("stn", values, Provenance(
        dataset="cifar10", model="alexnet", strategy="1st-bn", epochs=epochs)), path)
    return path


def test_inspect_stn_draws_a_panel_per_kind_and_a_table(tmp_path):
    path = stn_file(tmp_path)
    png = tmp_path / "stn.png"
    result = hba("inspect", path, "--png", png)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80, lines
    text = result.stdout
    assert "stn space" in text and "alexnet" in text
    assert "(a) augmentation scalars per epoch" in text and "(b) dropout scalars" in text
    assert not any(oc.label in text for oc in space.OP_COPIES)
    for scalar in STN.scalars:  # a heat-map row and a table row each
        rows = [line for line in lines if line.split()[:1] == [scalar.name]]
        assert len(rows) == 2, (scalar.name, rows)
        assert len(rows[0]) == 80  # the heat-map row is every column drawn
    table = next(line for line in lines if line.split()[:2] == ["cutlength", "[0,"])
    # cutlength (scalar 11 of 15) goes from 4 px at the start to 0.75 × 24 = 18 px at the end
    assert "4 (used 4)" in table and table.endswith("18 (used 18)"), table
    assert "scalars at the start (epoch 0), middle (6) and end (11)" in text
    with Image.open(png) as image:
        assert image.format == "PNG" and image.width >= 800
        assert len(np.unique(np.asarray(image).reshape(-1, 3), axis=0)) > 50


def test_export_stn_json_and_csv(tmp_path):
    path = stn_file(tmp_path)
    schedule = load_schedule(path)
    out = tmp_path / "out.json"
    assert hba("export", path, "-f", "json", "--out", out).exit_code == 0
    assert load_schedule(out) == schedule and out.read_text() == path.read_text()
    assert hba("export", path, "-f", "json", "--epochs", 23, "--out", out).exit_code == 0
    stretched = load_schedule(out)
    assert stretched.space_name == "stn" and stretched == stretch(schedule, 23)

    csv_out = tmp_path / "out.csv"
    result = hba("export", path, "-f", "csv", "--out", csv_out)
    assert result.exit_code == 0, result.output
    with csv_out.open(newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == ["epoch", *STN.scalar_names]  # no op columns
        rows = list(reader)
    assert [int(r["epoch"]) for r in rows] == list(range(schedule.epochs))
    for name, values in schedule.scalar_values().items():
        np.testing.assert_array_equal([float(r[name]) for r in rows], values)


def test_export_pba_of_stn_is_refused(tmp_path):
    path = stn_file(tmp_path)
    out = tmp_path / "stn.txt"
    for extra in ((), ("--epochs", 40)):
        assert_user_error(hba("export", path, "-f", "pba", *extra, "--out", out),
                          "pba export needs the hba space; this schedule's space is stn")
    assert not out.exists()


def test_version_1_file_inspects_and_exports_as_before(tmp_path):
    """A version 1 schedule keeps its version through export json, and every format works."""
    assert json.loads(VERSION_1.read_text())["version"] == 1
    result = hba("inspect", VERSION_1)
    assert result.exit_code == 0, result.output
    assert "(b) probability" in result.stdout and "space" not in result.stdout.splitlines()[0]
    out = tmp_path / "v1.json"
    assert hba("export", VERSION_1, "-f", "json", "--out", out).exit_code == 0
    document = json.loads(out.read_text())
    assert document["version"] == 1 and "space" not in document and "scalars" not in document
    assert load_schedule(out) == load_schedule(VERSION_1)
    for fmt, suffix in (("csv", "csv"), ("pba", "txt")):
        result = hba("export", VERSION_1, "-f", fmt, "--out", tmp_path / f"v1.{suffix}")
        assert result.exit_code == 0, result.output
    with (tmp_path / "v1.csv").open(newline="") as f:
        assert len(next(csv.reader(f))) == 1 + 2 * space.NUM_OP_COPIES
