"""The examples a user copies from run as they are (they import only public names)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_train_with_schedule_example_runs_one_epoch_on_the_digits():
    result = subprocess.run([sys.executable, str(EXAMPLES / "train_with_schedule.py"),
                             "--epochs", "1"], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert "test error" in result.stdout


def test_every_example_schedule_loads_and_names_its_space():
    """The shipped schedules: an illustration and a digits search in the hba space (one of
    them written before schedules named a space) and a search in the stn space."""
    from hbacli.schedule import load_schedule

    spaces = {path.name: load_schedule(path).space_name
              for path in sorted(EXAMPLES.glob("*.json"))}
    assert spaces == {"digits-schedule.json": "hba", "example-schedule.json": "hba",
                      "stn-schedule.json": "stn"}
    stn = load_schedule(EXAMPLES / "stn-schedule.json")
    assert stn.provenance.model == "alexnet" and stn.epochs == 10
