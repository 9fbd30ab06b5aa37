"""`hba evaluate` data-parallel: two CPU processes under torchrun (gloo), compared with the
same command in one process."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from hbacli import space
from hbacli.cli import app
from hbacli.results import EvaluationResults
from hbacli.schedule import Schedule, save_schedule


pytestmark = pytest.mark.usefixtures("one_torch_thread")


ARGS = ["--dataset", "digits", "--model", "wrn16_1", "--epochs", "1", "--train-size", "64",
        "--batch-size", "32", "--seeds", "0", "--device", "cpu"]
# torchrun runs a script; this one is the `hba` entry point.
LAUNCHER = "from hbacli.cli import main\nmain()\n"


def shape(value):
    """The JSON's structure: keys and list lengths, not values."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(v) for v in value]
    return type(value).__name__ if value is not None else None


def finite_numbers(value) -> bool:
    if isinstance(value, dict):
        return all(finite_numbers(v) for v in value.values())
    if isinstance(value, list):
        return all(finite_numbers(v) for v in value)
    return not isinstance(value, float) or math.isfinite(value)


def test_two_process_run_matches_the_single_process_run(tmp_path):
    schedule = tmp_path / "schedule.json"
    high = np.array([oc.op.high if oc.op.has_magnitude else np.nan for oc in space.OP_COPIES])
    save_schedule(Schedule.from_arrays(np.full((4, 30), 0.3), np.tile(high, (4, 1))), schedule)
    (tmp_path / "launch.py").write_text(LAUNCHER)

    def command(name: str) -> list[str]:
        return ["evaluate", str(schedule), *ARGS, "--out", str(tmp_path / f"{name}.json"),
                "--run-dir", str(tmp_path / name)]

    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc_per_node=2", "launch.py", *command("ddp")],
                          cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"},
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("results written to") == 1, done.stdout   # rank 0 alone prints
    assert CliRunner().invoke(app, command("single")).exit_code == 0
    ddp, single = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("ddp", "single"))

    EvaluationResults.model_validate(ddp)
    assert shape(ddp) == shape(single)
    assert finite_numbers(ddp)
    assert ddp["provenance"]["world_size"] == 2 and single["provenance"]["world_size"] == 1
    assert ddp["train_images"] == single["train_images"] == 64
    assert 0 <= ddp["per_seed"][0]["test_error"] <= 100
    assert (tmp_path / "ddp" / "seed-0" / "checkpoint.pt").is_file()


@pytest.mark.skipif(not __import__("torch").distributed.is_available(),
                    reason="torch without torch.distributed")
def test_ddp_is_wrapped_before_the_network_is_compiled(tmp_path):
    """DDP first, then torch.compile of the DDP module (issue 17): compiling the network before
    wrapping it hides its backward from DDP's bucketed all-reduce. Checked on a one-process
    gloo group; compilation itself is lazy, so nothing is compiled here."""
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from hbacli.evaluate import Ranks, wrap_for_training
    from hbacli.runtime import has_cpp_compiler

    if not has_cpp_compiler():
        pytest.skip("--compile needs a C++ compiler")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0,
                            world_size=1)
    try:
        model = torch.nn.Sequential(torch.nn.Linear(4, 4))
        network = wrap_for_training(model, torch.device("cpu"), Ranks(rank=0, world_size=2),
                                    compile=True)
        assert isinstance(network, DistributedDataParallel) and network.module is model
        assert network._compiled_call_impl is not None      # the wrapper is compiled ...
        assert model._compiled_call_impl is None            # ... not the network inside it
        assert list(model.state_dict()) == ["0.weight", "0.bias"]   # checkpoints keep their keys
    finally:
        dist.destroy_process_group()
