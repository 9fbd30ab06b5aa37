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
