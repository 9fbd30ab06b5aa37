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
from hbacli.schedule import load_schedule, stretch

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "example-schedule.json"
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


# PBA's level → value rules, transcribed from arcelien/pba (augmentation_transforms.py), in our
# units; PARAMETER_MAX = 10 and 32×32 images.
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
PBA_ORDER = ["AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "Color",
             "Contrast", "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateX",
             "TranslateY", "Cutout"]


def replay_pba_log(text: str, epochs: int) -> list[list[tuple[str, float, int]]]:
    """What PBA's parse_log_schedule + parse_policy make of the file: one policy per epoch."""
    raw = [ast.literal_eval(line) for line in text.splitlines()]
    for i in range(len(raw) - 1):
        assert raw[i][0] == raw[i + 1][1], "PBA would truncate the log here"
    segments = [[raw[0][3], raw[0][4]["hp_policy"]]]
    for i in range(len(raw) - 1):
        segments.append([raw[i + 1][3] - raw[i][3], raw[i][5]["hp_policy"]])
    segments.append([epochs - raw[-1][3], raw[-1][5]["hp_policy"]])
    assert sum(n for n, _ in segments) == epochs
    per_epoch = [vector for n, vector in segments for _ in range(n)]

    def parse(half):
        return [(name, half[2 * k] / 10, half[2 * k + 1]) for k, name in enumerate(PBA_ORDER)]
    return [parse(v[:30]) + parse(v[30:]) for v in per_epoch]


def test_export_pba_replays_to_the_schedule(tmp_path):
    out = tmp_path / "schedule.txt"
    result = hba("export", EXAMPLE, "--format", "pba", "--epochs", 120, "--out", out)
    assert result.exit_code == 0, result.output
    schedule = stretch(load_schedule(EXAMPLE), 120)
    policies = replay_pba_log(out.read_text(), schedule.epochs)
    assert len(policies) == 120
    probs, mags = schedule.probabilities(), schedule.magnitudes()
    index = {(oc.op.name, oc.copy): i for i, oc in enumerate(space.OP_COPIES)}
    for epoch, policy in enumerate(policies):
        assert len(policy) == 30
        for k, (name, probability, level) in enumerate(policy):
            i = index[(name, k // 15)]
            assert isinstance(level, int) and 0 <= level <= 9
            assert abs(probability - probs[epoch, i]) <= 0.05 + 1e-9
            if name not in PBA_VALUE:
                assert level == 0
                continue
            errors = [abs(PBA_VALUE[name](L) - mags[epoch, i]) for L in range(10)]
            assert errors[level] <= min(errors) + 1e-9, (epoch, name, level, mags[epoch, i])


def test_export_pba_levels_of_known_magnitudes(tmp_path):
    """Hand-checked: 15° → level 5, 0.45 of 32 px (14.4 px) → 9, factor 1.0 → 5."""
    document = json.loads(EXAMPLE.read_text())
    for series in document["ops"]:
        series["magnitude"] = None if series["magnitude"] is None else \
            [{"Rotate": 15.0, "TranslateX": 0.45, "Color": 1.0, "Posterize": 6.0,
              "Cutout": 0.1}.get(series["op"], series["low"])] * document["epochs"]
    source = tmp_path / "fixed.json"
    source.write_text(json.dumps(document))
    out = tmp_path / "fixed.txt"
    assert hba("export", source, "--format", "pba", "--out", out).exit_code == 0
    lines = out.read_text().splitlines()
    vector = ast.literal_eval(lines[0])[5]["hp_policy"]
    level = {name: vector[2 * k + 1] for k, name in enumerate(PBA_ORDER)}
    assert (level["Rotate"], level["TranslateX"], level["Color"], level["Posterize"],
            level["Cutout"], level["ShearX"]) == (5, 9, 5, 5, 2, 0)  # cutout 3.2 px → 2 px


# ---------------------------------------------------------------------------------------------
# Bad input: exit 2, one line on stderr starting with "error:", no output file.


def broken_files(directory: Path) -> dict[str, Path]:
    text = EXAMPLE.read_text()
    document = json.loads(text)
    cases: dict[str, str] = {"truncated": text[: len(text) // 2], "not JSON": "no schedule here\n"}
    for name, change in {
        "wrong version": lambda d: d.__setitem__("version", 2),
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
                "wrong version": "version 2 is not supported",
                "probability 1.7": "ops[3].probability[12] = 1.7 is outside [0, 1]",
                "NaN": "is not a finite number", "unknown op": "unknown operation 'Twirl'",
                "length mismatch": "201 entries", "missing file": "no such file"}
    for name, path in broken_files(inputs).items():
        assert_user_error(hba("inspect", path, "--png", outputs / "x.png"), path.name,
                          expected[name])
        for fmt in ("json", "csv", "pba"):
            assert_user_error(hba("export", path, "--format", fmt, "--out", outputs / f"x.{fmt}"),
                              path.name, expected[name])
    assert list(outputs.iterdir()) == []  # no output, no temp file


def test_bad_export_arguments(tmp_path):
    assert_user_error(hba("export", EXAMPLE, "--format", "yaml", "--out", tmp_path / "x"),
                      "unknown export format 'yaml'", "json, csv, pba")
    assert_user_error(hba("export", EXAMPLE, "--format", "csv", "--epochs", 0,
                          "--out", tmp_path / "x"), "--epochs")
    assert_user_error(hba("export", EXAMPLE, "--format", "csv", "--out", tmp_path), "cannot write")
    assert_user_error(hba("inspect", EXAMPLE, "--png", tmp_path), "cannot write")
    assert list(tmp_path.iterdir()) == []


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
