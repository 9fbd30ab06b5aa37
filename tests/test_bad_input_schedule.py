"""What a user might do wrong with a schedule file, `hba inspect` and `hba export` (issue 13).

Every case must end in one `error: ...` line and exit code 2 (or, for a narrow terminal, a
drawing that fits it), never a traceback, a usage box, wrapped lines or gigabytes of output:

- hand hba a JSON document nested thousands of levels deep (#10);
- inspect a schedule in a 40-column terminal, or narrower (#14);
- export with --epochs 1000000 (#15);
- give a schedule they cannot read: no permission, a directory, a symlink loop (#16);
- export or write a PNG onto a full disk (#16).
"""

from __future__ import annotations

import errno
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from rich.cells import cell_len
from rich.console import Console
from rich.text import Text
from typer.testing import CliRunner

from hbacli import space
from hbacli.cli import app
from hbacli.errors import HbaError
from hbacli.files import atomic_write_text
from hbacli.plots import LABEL_WIDTH, LINE_ROWS, MARGIN, MAX_WIDTH, MIN_WIDTH, inspect_schedule
from hbacli.schedule import (
    MAX_EPOCHS,
    MAX_JSON_DEPTH,
    Schedule,
    load_schedule,
    save_schedule,
    stretch,
)
from hbacli.spaces import get_space

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "example-schedule.json"
runner = CliRunner()
EXPORTS = (("json", "json"), ("csv", "csv"), ("pba", "txt"))


def hba(*args: object, columns: int = 80):
    return runner.invoke(app, [str(a) for a in args],
                         env={"COLUMNS": str(columns), "NO_COLOR": "1"})


def assert_user_error(result, *expected: str) -> None:
    """Exit code 2 and exactly one line on stderr, `error: ...`, holding every expected part."""
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for part in expected:
        assert part in lines[0], lines[0]


def nested(depth: int, leaf: str = "1") -> str:
    return '{"a": ' * depth + leaf + "}" * depth


def with_deep_config(depth: int) -> str:
    """The example schedule, its provenance config nesting ``depth`` more levels."""
    document = json.loads(EXAMPLE.read_text())
    document["provenance"]["config"] = {"x": "DEEP"}
    return json.dumps(document).replace('"DEEP"', nested(depth))


# ---------------------------------------------------------------------------------------------
# 10. A document nested too deeply: one line naming the file, for inspect and every export.

TOO_DEEP = {
    "an array nested 100,000 deep": lambda: "[" * 100_000 + "]" * 100_000,
    "an object nested 100,000 deep": lambda: nested(100_000),
    "a schedule whose config nests 2,000 levels": lambda: with_deep_config(2_000),
    # json reads it, but pydantic's serialiser gives up at about 255 levels (export json).
    "a schedule whose config nests 300 levels": lambda: with_deep_config(300),
}


@pytest.mark.parametrize("case", list(TOO_DEEP))
def test_deeply_nested_json_is_one_line_naming_the_file(tmp_path, case):
    path = tmp_path / "deep.json"
    path.write_text(TOO_DEEP[case]())
    expected = (str(path), f"nested more than {MAX_JSON_DEPTH} levels")
    with pytest.raises(HbaError) as info:
        load_schedule(path)
    assert str(info.value).startswith(f"{path}: ") and "\n" not in str(info.value)
    assert_user_error(hba("inspect", path), *expected)
    for fmt, suffix in EXPORTS:
        assert_user_error(hba("export", path, "-f", fmt, "--out", tmp_path / f"x.{suffix}"),
                          *expected)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deep.json"]


def test_config_nested_within_the_limit_still_loads(tmp_path):
    path = tmp_path / "deep-but-fine.json"
    path.write_text(with_deep_config(MAX_JSON_DEPTH - 5))
    assert load_schedule(path).provenance.config["x"]["a"]["a"]
    assert hba("inspect", path).exit_code == 0
    assert hba("export", path, "-f", "json", "--out", tmp_path / "x.json").exit_code == 0


# ---------------------------------------------------------------------------------------------
# 14. A narrow terminal: the drawing fits it, or a short note replaces it; never wrapped rows.


def render(width: int, colour: bool, path: Path = EXAMPLE) -> list[str]:
    """What `hba inspect` prints on a console ``width`` columns wide, as plain lines."""
    buffer = io.StringIO()
    console = Console(file=buffer, width=width, color_system="truecolor" if colour else None,
                      force_terminal=colour, no_color=not colour)
    inspect_schedule(path, console=console)
    return [Text.from_ansi(line).plain for line in buffer.getvalue().splitlines()]


def assert_fits(lines: list[str], width: int) -> None:
    """No line wider than ``width``; the drawing whole (no row wrapped), or a short note."""
    too_long = [line for line in lines if cell_len(line) > width]
    assert not too_long, too_long
    if width < MIN_WIDTH:
        assert len(lines) <= 4 and "--png" in " ".join(lines), lines  # a short note
        assert not any(oc.label in line for line in lines for oc in space.OP_COPIES)
        return
    drawn = min(width, MAX_WIDTH) - MARGIN  # plot columns
    for oc in space.OP_COPIES:  # one whole heat-map row per op copy
        rows = [line for line in lines if line.split()[:1] == [oc.label]]
        assert len(rows) == 1, (oc.label, rows)
        assert cell_len(rows[0]) == MARGIN + drawn, rows[0]  # every column drawn, none wrapped
    braille = [line for line in lines if any("\u2801" <= ch <= "\u28ff" for ch in line)]
    assert len(braille) == LINE_ROWS, braille
    assert all(cell_len(line) == MARGIN + drawn for line in braille), braille


@pytest.mark.parametrize("colour", [False, True], ids=["plain", "colour"])
@pytest.mark.parametrize("width", [20, 30, 35, 36, 40, 50, 60, 80, 120])  # MIN_WIDTH is 36
def test_inspect_fits_the_console_width(width, colour):
    assert_fits(render(width, colour), width)


@pytest.mark.parametrize("colour", [False, True], ids=["plain", "colour"])
@pytest.mark.parametrize("width", [20, 36, 50, 80, 120])
def test_inspect_of_a_scalar_space_fits_the_console_width(tmp_path, width, colour):
    """An stn schedule: a whole heat-map row per scalar, its table folded into the width."""
    stn = get_space("stn")
    path = tmp_path / "stn.json"
    save_schedule(Schedule.from_values("stn", np.tile(stn.start_values(), (30, 1))), path)
    lines = render(width, colour, path)
    assert not [line for line in lines if cell_len(line) > width]
    if width < MIN_WIDTH:
        assert len(lines) <= 4 and "--png" in " ".join(lines), lines
        return
    drawn = min(width, MAX_WIDTH) - MARGIN
    for name in stn.scalar_names:  # heat-map rows: the name right-aligned in the margin
        rows = [line for line in lines if line[:MARGIN] == f"{name:>{LABEL_WIDTH}}  "]
        assert len(rows) == 1 and cell_len(rows[0]) == MARGIN + drawn, (name, rows)


@pytest.mark.parametrize("columns", [30, 40, 60])
def test_inspect_fits_the_terminal_columns(columns):
    result = hba("inspect", EXAMPLE, columns=columns)
    assert result.exit_code == 0, result.output
    assert_fits(result.stdout.splitlines(), columns)


# ---------------------------------------------------------------------------------------------
# 15. --epochs without bound: refused above MAX_EPOCHS, with the limit and why, nothing written.

HUGE_EPOCHS = {
    "one over the limit, json": (MAX_EPOCHS + 1, "json", "json"),
    "a million, csv (the trial's 1.1 GB file)": (1_000_000, "csv", "csv"),
    "a trillion, pba": (10**12, "pba", "txt"),
}


@pytest.mark.parametrize("case", list(HUGE_EPOCHS))
def test_export_refuses_absurd_epochs(tmp_path, case):
    epochs, fmt, suffix = HUGE_EPOCHS[case]
    assert_user_error(hba("export", EXAMPLE, "-f", fmt, "--epochs", epochs,
                          "--out", tmp_path / f"x.{suffix}"),
                      f"--epochs must be at most {MAX_EPOCHS}", f"got {epochs}", "1800")
    assert list(tmp_path.iterdir()) == []


def test_stretch_is_bounded_for_every_caller():
    """evaluate stretches through the same function: the bound holds there too."""
    schedule = load_schedule(EXAMPLE)
    with pytest.raises(HbaError, match=f"limit is {MAX_EPOCHS} .*1800"):
        stretch(schedule, MAX_EPOCHS + 1)
    assert stretch(schedule, MAX_EPOCHS).epochs == MAX_EPOCHS


def test_the_limit_exceeds_every_preset():
    from hbacli.catalogue import DATASETS, EVALUATION_FALLBACK, EVALUATION_RECIPES

    longest = max(p["epochs"] for p in [*EVALUATION_RECIPES.values(), EVALUATION_FALLBACK,
                                        *(d.search for d in DATASETS.values())])
    assert longest == 1800 and MAX_EPOCHS >= 5 * longest


# ---------------------------------------------------------------------------------------------
# 16. A schedule that cannot be read: one line naming the file.


@pytest.fixture
def unreadable(tmp_path, monkeypatch):
    """A schedule without read permission; as root (which reads anyway) the refusal is simulated
    where it happens: click's os.access check and the read itself."""
    path = tmp_path / "locked.json"
    path.write_text(EXAMPLE.read_text())
    path.chmod(0)
    if os.access(path, os.R_OK):
        real_access, real_read_text = os.access, Path.read_text

        def access(target, mode, *args, **kwargs):
            if Path(target) == path and mode & os.R_OK:
                return False
            return real_access(target, mode, *args, **kwargs)

        def read_text(self, *args, **kwargs):
            if self == path:
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
            return real_read_text(self, *args, **kwargs)

        monkeypatch.setattr(os, "access", access)
        monkeypatch.setattr(Path, "read_text", read_text)
    yield path
    path.chmod(0o600)


def _directory(tmp_path: Path) -> tuple[Path, str]:
    path = tmp_path / "schedules"
    path.mkdir()
    return path, "is a directory"


def _symlink_loop(tmp_path: Path) -> tuple[Path, str]:
    path = tmp_path / "loop.json"
    path.symlink_to(path)
    return path, "cannot read"


UNREADABLE = {"a directory given as the schedule": _directory,
              "a symlink pointing at itself": _symlink_loop}


@pytest.mark.parametrize("case", list(UNREADABLE))
def test_unreadable_paths_give_one_line(tmp_path, case):
    path, expected = UNREADABLE[case](tmp_path)
    assert_user_error(hba("inspect", path), str(path), expected)
    for fmt, suffix in EXPORTS:
        assert_user_error(hba("export", path, "-f", fmt, "--out", tmp_path / f"x.{suffix}"),
                          str(path), expected)


def test_load_schedule_without_read_permission(unreadable):
    with pytest.raises(HbaError, match=r"locked\.json: cannot read \(Permission denied\)$"):
        load_schedule(unreadable)


@pytest.mark.parametrize("command", ["inspect", "export"])
def test_cli_without_read_permission(tmp_path, unreadable, command):
    extra = ["-f", "csv", "--out", tmp_path / "x.csv"] if command == "export" else []
    assert_user_error(hba(command, unreadable, *extra), str(unreadable),
                      "cannot read (Permission denied)")


# ---------------------------------------------------------------------------------------------
# 16. A full disk: the message names the file that could not be written.


@pytest.fixture
def full_disk(monkeypatch):
    def fsync(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", fsync)


def test_atomic_write_on_a_full_disk_names_the_file(tmp_path, full_disk):
    target = tmp_path / "schedule.json"
    with pytest.raises(OSError) as info:
        atomic_write_text(target, "{}")
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(target)
    assert list(tmp_path.iterdir()) == []  # no temporary file left behind


@pytest.mark.parametrize("command", ["export", "inspect --png"])
def test_full_disk_error_names_the_output(tmp_path, full_disk, command):
    out = tmp_path / ("x.csv" if command == "export" else "x.png")
    args = (["export", EXAMPLE, "-f", "csv", "--out", out] if command == "export"
            else ["inspect", EXAMPLE, "--png", out])
    assert_user_error(hba(*args), f"cannot write {out}", os.strerror(errno.ENOSPC))
    assert list(tmp_path.iterdir()) == []
