"""What a user might do to a run's files and settings, and what hba must answer: one `error:`
line and exit 2, before any training where it can be known then, and no damage to the run.

Both long commands (search, evaluate) go through one guard, ``hbacli.runs.RunFiles``; the
table-driven tests run every case through both where it applies to both."""

from __future__ import annotations

import errno
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from hbacli import space
from hbacli.cli import app
from hbacli.files import atomic_write_bytes
from hbacli.schedule import Schedule, save_schedule

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY_SEARCH = ["--train-size", "64", "--val-size", "32", "--batch-size", "32", "--epochs", "1",
               "--device", "cpu"]
TINY_EVALUATE = ["--model", "wrn16_1", "--train-size", "64", "--batch-size", "32", "--epochs",
                 "1", "--device", "cpu"]


def command(kind: str, tmp_path, out, run_dir, *extra: str) -> list[str]:
    if kind == "search":
        return ["search", "--dataset", "digits", *TINY_SEARCH, "--out", str(out), "--run-dir",
                str(run_dir), *extra]
    return ["evaluate", "none", "--dataset", "digits", *TINY_EVALUATE, "--out", str(out),
            "--run-dir", str(run_dir), *extra]


def one_error_line(result, *fragments: str, alone: bool = True) -> str:
    """Exit 2 and one `error:` line, the last; ``alone``: nothing else was printed (the
    command stopped before any work, so it had no progress to show)."""
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2, result.output
    assert lines and lines[-1].startswith("error: "), result.output
    assert sum(line.startswith("error: ") for line in lines) == 1, result.output
    assert "Traceback" not in result.output
    if alone:
        assert len(lines) == 1, result.output
    for fragment in fragments:
        assert fragment in lines[-1], lines[-1]
    return lines[-1]


def a_folder(path):
    path.mkdir()
    return path


def a_file(path):
    path.write_text("")
    return path


def long_name() -> str:
    return "x" * 300 + ".json"


# (what the user did, how to set it up: tmp -> (out, run_dir), message fragments)
BAD_PLACES = [
    ("--out names an existing folder",
     lambda tmp: (a_folder(tmp / "a-folder"), tmp / "run"),
     ["is a folder"]),
    ("--out has a 300-character name",
     lambda tmp: (tmp / long_name(), tmp / "run"), ["--out", "305 bytes", "at most"]),
    ("--out lies below a file",
     lambda tmp: (a_file(tmp / "f") / "out.json", tmp / "run"),
     ["is a file, not a folder"]),
    ("--run-dir is a file",
     lambda tmp: (tmp / "out.json", a_file(tmp / "run")),
     ["--run-dir", "is a file, not a folder"]),
    ("--run-dir has a 300-character name",
     lambda tmp: (tmp / "out.json", tmp / ("r" * 300)), ["run directory", "bytes"]),
    ("--out is the run's own checkpoint",
     lambda tmp: (tmp / "run" / "checkpoint.pt", tmp / "run"), ["would overwrite"]),
    ("--out is the run's own config",
     lambda tmp: (tmp / "run" / "config.json", tmp / "run"), ["would overwrite"]),
]


@pytest.mark.parametrize("kind", ["search", "evaluate"])
@pytest.mark.parametrize("case", BAD_PLACES, ids=[c[0] for c in BAD_PLACES])
def test_a_bad_place_for_the_files_is_one_line_before_any_work(tmp_path, kind, case):
    _, setup, fragments = case
    out, run_dir = setup(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    result = CliRunner().invoke(app, command(kind, tmp_path, out, run_dir))
    if "checkpoint" in out.name and kind == "evaluate":
        # evaluate's checkpoints live in seed-S/; RUN/checkpoint.pt is a free name for it
        assert result.exit_code == 0, result.output
        return
    one_error_line(result, *fragments)
    assert sorted(p.name for p in tmp_path.iterdir()) == before   # nothing created


def test_an_evaluate_out_inside_a_seed_folder_is_refused(tmp_path):
    result = CliRunner().invoke(app, command("evaluate", tmp_path,
                                             tmp_path / "run" / "seed-0" / "checkpoint.pt",
                                             tmp_path / "run"))
    one_error_line(result, "would overwrite")


def test_an_unwritable_folder_is_named_before_any_work(tmp_path, monkeypatch):
    """Read-only places (simulated: the tests run as root, for whom every folder is writable)."""
    import hbacli.runs

    real_access = os.access
    locked = tmp_path / "read-only"
    locked.mkdir()
    monkeypatch.setattr(hbacli.runs.os, "access",
                        lambda p, mode: False if str(p).startswith(str(locked)) else
                        real_access(p, mode))
    for kind in ("search", "evaluate"):
        result = CliRunner().invoke(app, command(kind, tmp_path, locked / "out.json",
                                                 tmp_path / f"run-{kind}"))
        one_error_line(result, "not writable", str(locked))
        result = CliRunner().invoke(app, command(kind, tmp_path, tmp_path / "out.json",
                                                 locked / "run"))
        one_error_line(result, "not writable")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["read-only"]


def test_a_full_disk_names_the_file_not_a_temporary_one(tmp_path, monkeypatch):
    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(OSError) as caught:
        atomic_write_bytes(tmp_path / "results.json", b"{}")
    assert caught.value.filename == str(tmp_path / "results.json")
    assert list(tmp_path.iterdir()) == []                  # no temporary file left


def test_a_full_disk_during_a_run_is_one_line_naming_the_file(tmp_path, monkeypatch):
    import hbacli.files

    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(hbacli.files.os, "fsync", no_space)
    for kind in ("search", "evaluate"):
        result = CliRunner().invoke(app, command(kind, tmp_path, tmp_path / f"{kind}.json",
                                                 tmp_path / f"run-{kind}"))
        line = one_error_line(result, "No space left on device")
        assert str(tmp_path / f"run-{kind}") in line and ".tmp" not in line


# ---- resume -----------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["search", "evaluate"])
def test_resume_with_nothing_to_resume_is_refused(tmp_path, kind):
    (tmp_path / "run").mkdir()
    result = CliRunner().invoke(app, command(kind, tmp_path, tmp_path / "o.json",
                                             tmp_path / "run", "--resume"))
    one_error_line(result, "nothing to resume")


@pytest.mark.parametrize("kind, checkpoint", [("search", "checkpoint.pt"),
                                              ("evaluate", "seed-0/checkpoint.pt")])
def test_a_checkpoint_that_is_a_folder_is_called_so(tmp_path, kind, checkpoint):
    (tmp_path / "run" / checkpoint).mkdir(parents=True)
    result = CliRunner().invoke(app, command(kind, tmp_path, tmp_path / "o.json",
                                             tmp_path / "run", "--resume"))
    one_error_line(result, "is not a file")


def test_resuming_an_evaluation_whose_schedule_changed_is_refused(tmp_path):
    values = space.lambda_to_physical(space.initial_lambda())
    probabilities, magnitudes = space.split_physical(values)
    schedule_path = tmp_path / "sched.json"
    save_schedule(Schedule.from_arrays(probabilities[None], magnitudes[None]), schedule_path)
    base = ["evaluate", str(schedule_path), "--dataset", "digits", *TINY_EVALUATE,
            "--epochs", "2", "--out", str(tmp_path / "o.json"), "--run-dir", str(tmp_path / "run")]

    def stop_after_one(record):
        raise KeyboardInterrupt

    from hbacli.evaluate import run_evaluation
    from hbacli.presets import resolve_evaluate_config
    cfg = resolve_evaluate_config(str(schedule_path), "digits", "wrn16_1", train_size=64,
                                  batch_size=32, epochs=2, device="cpu")
    with pytest.raises(KeyboardInterrupt):
        run_evaluation(cfg, out=tmp_path / "o.json", run_dir=tmp_path / "run", progress=False,
                       on_epoch_end=stop_after_one)
    probabilities = probabilities.copy()
    probabilities[0] = 0.9                                   # the user edits the schedule
    save_schedule(Schedule.from_arrays(probabilities[None], magnitudes[None]), schedule_path)
    checkpoint = tmp_path / "run" / "seed-0" / "checkpoint.pt"
    before = checkpoint.read_bytes()
    one_error_line(CliRunner().invoke(app, base + ["--resume"]), "schedule_values_sha256")
    assert checkpoint.read_bytes() == before                # the run is not damaged


# ---- divergence ---------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["search", "evaluate"])
def test_a_diverging_run_stops_with_the_setting_to_change(tmp_path, kind):
    run_dir = tmp_path / "run"
    result = CliRunner().invoke(app, command(kind, tmp_path, tmp_path / "o.json", run_dir,
                                             "--lr", "1e30"))
    one_error_line(result, "diverged", "--lr", alone=False)
    assert not (tmp_path / "o.json").exists()
    again = CliRunner().invoke(app, command(kind, tmp_path, tmp_path / "o.json",
                                            tmp_path / "other", "--lr", "0.01"))
    assert again.exit_code == 0, again.output                 # restartable


# ---- the lock and failed starts ----------------------------------------------------------------

def _dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    return int(done.stdout)


@pytest.mark.parametrize("kind", ["search", "evaluate"])
def test_a_run_directory_in_use_is_refused_and_a_stale_lock_taken_over(tmp_path, kind):
    import socket

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / ".lock").write_text(f"{os.getpid()} {socket.gethostname()}\n")   # alive: us
    result = CliRunner().invoke(app, command(kind, tmp_path, tmp_path / "o.json", run_dir))
    one_error_line(result, "is in use by process", str(os.getpid()))
    assert (run_dir / ".lock").exists()                       # the other run's lock is kept
    (run_dir / ".lock").write_text(f"{_dead_pid()} {socket.gethostname()}\n")
    result = CliRunner().invoke(app, command(kind, tmp_path, tmp_path / "o.json", run_dir))
    assert result.exit_code == 0, result.output
    assert not (run_dir / ".lock").exists()                   # released at the end


@pytest.mark.parametrize("kind", ["search", "evaluate"])
def test_a_failed_start_leaves_no_run_folder(tmp_path, kind, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = (["search", "--dataset", f"imagefolder:{tmp_path / 'missing'}", *TINY_SEARCH]
            if kind == "search" else
            ["evaluate", "none", "--dataset", f"imagefolder:{tmp_path / 'missing'}",
             *TINY_EVALUATE])
    result = CliRunner().invoke(app, args)
    one_error_line(result)
    assert not (tmp_path / "runs").exists()          # runs/ itself was made by this command
