"""`hba evaluate` on real data (the embedded digits, CIFAR-10 images from the fixture), a tiny
WRN, one or two short epochs, CPU."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from hbacli import space
from hbacli.baselines import torchvision_policy
from hbacli.batches import PerImageBatches
from hbacli.cli import app
from hbacli.distributed import Ranks
from hbacli.errors import HbaError
from hbacli.evaluate import LOG_FIELDS, run_evaluation, seed_checkpoint_path
from hbacli.presets import lr_factor, resolve_evaluate_config
from hbacli.results import EvaluationResults
from hbacli.runtime import has_cpp_compiler
from hbacli.schedule import Schedule, save_schedule

pytestmark = pytest.mark.usefixtures("one_torch_thread")


TINY = dict(train_size=64, batch_size=32, epochs=2, device="cpu")


def tiny_config(policy, **overrides):
    return resolve_evaluate_config(str(policy), "digits", "wrn16_1", **{**TINY, **overrides})


def evaluate(tmp_path, name, cfg, **kwargs) -> EvaluationResults:
    return run_evaluation(cfg, out=tmp_path / f"{name}.json", run_dir=tmp_path / name,
                          progress=False, **kwargs)


def final_weights(run_dir, seed=0) -> dict[str, torch.Tensor]:
    return torch.load(seed_checkpoint_path(run_dir, seed), weights_only=True)["model"]


def write_schedule(path, probabilities: np.ndarray) -> str:
    high = np.array([oc.op.high if oc.op.has_magnitude else np.nan for oc in space.OP_COPIES])
    save_schedule(Schedule.from_arrays(probabilities, np.tile(high, (len(probabilities), 1))),
                  path)
    return str(path)


@pytest.fixture(scope="module")
def cutout_run(tmp_path_factory):
    """The `cutout` baseline, two seeds, two epochs: the reference several tests compare with."""
    tmp = tmp_path_factory.mktemp("cutout")
    return tmp, evaluate(tmp, "run", tiny_config("cutout", seeds=[0, 1]))


# ---- the recipe ------------------------------------------------------------------------------

def test_cosine_lr_runs_from_one_to_zero_and_step_drops_tenfold():
    cfg = tiny_config("none", epochs=4)
    assert [lr_factor(s, cfg, 10) for s in (0, 20, 40)] == pytest.approx([1, 0.5, 0])
    cfg = tiny_config("none", epochs=6, lr_schedule="step", lr_milestones=[2, 4])
    assert [lr_factor(e * 10, cfg, 10) for e in range(6)] == pytest.approx(
        [1, 1, 0.1, 0.1, 0.01, 0.01])


# ---- results, log, summary -------------------------------------------------------------------

def test_results_file_holds_every_seed_and_their_mean_and_std(cutout_run):
    tmp, results = cutout_run
    on_disk = EvaluationResults.model_validate_json((tmp / "run.json").read_text())
    assert on_disk == results
    assert [r.seed for r in results.per_seed] == [0, 1]
    errors = [r.test_error for r in results.per_seed]
    assert all(0 <= e <= 100 and math.isfinite(e) for e in errors)
    assert results.summary.test_error.mean == pytest.approx(np.mean(errors))
    assert results.summary.test_error.std == pytest.approx(np.std(errors, ddof=1))
    assert results.summary.test_top5_error is None          # top-5 only for ImageNet
    assert results.train_images == 64 and results.test_images == 397
    assert results.config["policy"] == "cutout" and results.provenance.world_size == 1
    assert results.provenance.versions["torch"] == torch.__version__
    # Different seeds: different initial weights and orders, hence different models.
    assert results.per_seed[0].test_loss != results.per_seed[1].test_loss


def test_epoch_log_has_a_row_per_seed_and_epoch(cutout_run):
    tmp, _ = cutout_run
    with open(tmp / "run" / "epochs.csv") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == LOG_FIELDS
    assert [(r["seed"], r["epoch"]) for r in rows] == [("0", "1"), ("0", "2"), ("1", "1"),
                                                       ("1", "2")]
    assert float(rows[1]["lr"]) == pytest.approx(0.0, abs=1e-9)   # cosine ends at 0
    assert all(float(r["images_per_second"]) > 0 for r in rows)
    assert json.loads((tmp / "run" / "config.json").read_text())["epochs"] == 2


# ---- policies --------------------------------------------------------------------------------

def test_zero_probability_schedule_trains_bit_identically_to_cutout(tmp_path, cutout_run):
    ref_dir, reference = cutout_run
    zero = write_schedule(tmp_path / "zero.json", np.zeros((5, space.NUM_OP_COPIES)))
    got = evaluate(tmp_path, "zero", tiny_config(zero, seeds=[0])).per_seed[0]
    want = reference.per_seed[0]
    assert (got.test_loss, got.train_loss, got.test_error) == (
        want.test_loss, want.train_loss, want.test_error)
    got, want = final_weights(tmp_path / "zero"), final_weights(ref_dir / "run")
    assert all(torch.equal(got[k], want[k]) for k in want)
    # ... and `none` (no Cutout) does not: the comparison can fail.
    none = evaluate(tmp_path, "none", tiny_config("none", seeds=[0]))
    assert none.per_seed[0].train_loss != reference.per_seed[0].train_loss


# `none` and `cutout` ran above.
@pytest.mark.parametrize("policy", ["autoaugment", "randaugment", "trivialaugment", "schedule",
                                    "schedule-per-image"])
def test_every_policy_trains_one_epoch(tmp_path, policy):
    kwargs = {}
    if policy.startswith("schedule"):
        policy, kwargs = write_schedule(tmp_path / "s.json", np.full((3, 30), 0.5)), (
            {"replay": "per-image", "workers": 1} if policy.endswith("per-image") else {})
    results = evaluate(tmp_path, "run", tiny_config(policy, epochs=1), **kwargs)
    seed = results.per_seed[0]
    assert math.isfinite(seed.test_loss) and math.isfinite(seed.train_loss)
    assert 0 <= seed.test_error <= 100 and seed.epochs == 1


@pytest.mark.skipif(not has_cpp_compiler(), reason="torch.compile needs a C++ compiler")
@pytest.mark.slow
def test_compiled_training_checkpoints_like_uncompiled(tmp_path, cutout_run):
    """--compile: the same recipe trains, and its checkpoint holds the plain network's keys."""
    results = evaluate(tmp_path, "run", tiny_config("cutout", seeds=[0], epochs=1, compile=True))
    assert math.isfinite(results.per_seed[0].test_loss)
    assert final_weights(tmp_path / "run").keys() == final_weights(cutout_run[0] / "run").keys()


def test_torchvision_policies_draw_per_image(cifar_slice):
    one_image = torch.from_numpy(cifar_slice["train_images"][:1]).expand(32, -1, -1, -1)
    for name in ("autoaugment", "randaugment", "trivialaugment"):
        batches = PerImageBatches(one_image.contiguous(), torch.zeros(32, dtype=torch.int64),
                                  torchvision_policy(name, "cifar"), 32, torch.device("cpu"),
                                  seed=0, ranks=Ranks(), workers=0)
        batches.set_epoch(0)
        (images, _), = list(batches)
        distinct = {images[i].numpy().tobytes() for i in range(32)}
        assert len(distinct) > 8, name


def test_autoaugment_uses_the_policy_of_the_dataset_family():
    from torchvision.transforms.v2 import AutoAugmentPolicy

    assert torchvision_policy("autoaugment", "cifar").policy == AutoAugmentPolicy.CIFAR10
    assert torchvision_policy("autoaugment", "svhn").policy == AutoAugmentPolicy.SVHN
    assert torchvision_policy("autoaugment", "imagenet").policy == AutoAugmentPolicy.IMAGENET


# ---- checkpoints and resume --------------------------------------------------------------------

class Interrupt(Exception):
    pass


def test_interrupted_seed_resumes_exactly_and_finished_seeds_are_skipped(tmp_path, cutout_run):
    ref_dir, reference = cutout_run
    cfg = tiny_config("cutout", seeds=[0, 1])

    def stop_in_seed_1(record):
        if record.seed == 1 and record.epoch == 1:
            raise Interrupt

    with pytest.raises(Interrupt):
        evaluate(tmp_path, "run", cfg, on_epoch_end=stop_in_seed_1)
    with pytest.raises(HbaError, match="--resume"):
        evaluate(tmp_path, "run", cfg)
    with pytest.raises(HbaError, match="epochs: 2 → 3"):
        evaluate(tmp_path, "run", tiny_config("cutout", seeds=[0, 1], epochs=3), resume=True)

    trained = []
    results = evaluate(tmp_path, "run", cfg, resume=True,
                       on_epoch_end=lambda r: trained.append((r.seed, r.epoch)))
    assert trained == [(1, 2)]               # seed 0 was finished, seed 1 resumes at epoch 2
    for got, want in zip(results.per_seed, reference.per_seed):
        assert (got.test_loss, got.train_loss) == (want.test_loss, want.train_loss)
    got, want = final_weights(tmp_path / "run", 1), final_weights(ref_dir / "run", 1)
    assert all(torch.equal(got[k], want[k]) for k in want)
    with open(tmp_path / "run" / "epochs.csv") as f:
        assert len(list(csv.DictReader(f))) == 4


# ---- bad input through the CLI -----------------------------------------------------------------

def run_cli(*args):
    # The defaults go first: a repeated option's last value wins.
    return CliRunner().invoke(app, ["evaluate", "--device", "cpu", "--epochs", "1",
                                    "--train-size", "32", "--batch-size", "32", *args])


def assert_one_line_error(result, *fragments):
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    for fragment in fragments:
        assert fragment in lines[0]


def test_bad_inputs_get_one_line_errors(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert_one_line_error(run_cli("missing.json"), "missing.json", "neither a schedule file")
    assert_one_line_error(run_cli("autoaugmnet"), "autoaugmnet", "randaugment")
    (tmp_path / "bad.json").write_text(json.dumps({"format": "hba-schedule", "version": 1}))
    assert_one_line_error(run_cli("bad.json"), "bad.json")
    (tmp_path / "notjson.json").write_text("{ nope")
    assert_one_line_error(run_cli("notjson.json"), "notjson.json", "JSON")
    assert_one_line_error(run_cli("none", "--model", "resnet7"), "unknown model 'resnet7'")
    assert_one_line_error(run_cli("none", "--seeds", "0,x"), "--seeds")
    assert_one_line_error(run_cli("none", "--batch-size", "0"), "batch_size")
    assert not list(tmp_path.glob("runs/*/seed-*"))           # nothing was trained


def test_fresh_run_over_checkpoints_is_refused_through_the_cli(tmp_path, monkeypatch, cutout_run):
    ref_dir, _ = cutout_run
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["evaluate", "cutout", "--run-dir", str(ref_dir / "run")])
    assert_one_line_error(result, "--resume")


def test_init_weights_start_the_network_from_a_state_dict(tmp_path):
    """--init-weights: training starts from the file's weights (here with a learning rate too
    small to move them), and a file for another network is refused before anything is written."""
    from hbacli.nets import build_model

    source = build_model("wrn16_1", 10)
    with torch.no_grad():              # far from any seed's random init
        for parameter in source.parameters():
            parameter.add_(1.0)
    torch.save(source.state_dict(), tmp_path / "network.pt")
    evaluate(tmp_path, "run", tiny_config("none", epochs=1, lr=1e-9,
                                          init_weights=str(tmp_path / "network.pt")))
    trained = final_weights(tmp_path / "run")
    for name, value in source.state_dict().items():
        if value.is_floating_point() and "running" not in name:
            assert torch.allclose(trained[name], value, atol=1e-6), name

    torch.save(build_model("wrn28_2", 10).state_dict(), tmp_path / "other.pt")
    for bad, message in [("other.pt", "does not fit wrn16_1"), ("missing.pt", "missing.pt")]:
        result = CliRunner().invoke(app, [
            "evaluate", "none", "--dataset", "digits", "--model", "wrn16_1", "--epochs", "1",
            "--init-weights", str(tmp_path / bad), "--device", "cpu",
            "--run-dir", str(tmp_path / f"bad-{bad}"), "--out", str(tmp_path / "bad.json")])
        lines = result.output.strip().splitlines()
        assert result.exit_code == 2 and len(lines) == 1 and message in lines[0], result.output
        assert not (tmp_path / f"bad-{bad}").exists() and not (tmp_path / "bad.json").exists()


def test_eval_every_logs_the_test_error_per_epoch_and_leaves_training_alone(tmp_path):
    """--eval-every 1: epochs.csv gets each epoch's test error, the last one equal to the
    result's; the trained weights are those of a run without it (testing changes nothing)."""
    plain = evaluate(tmp_path, "plain", tiny_config("cutout", epochs=2))
    tested = evaluate(tmp_path, "tested", tiny_config("cutout", epochs=2, eval_every=1))
    with open(tmp_path / "tested" / "epochs.csv") as f:
        rows = list(csv.DictReader(f))
    errors = [float(r["test_error"]) for r in rows]
    assert len(errors) == 2 and all(0 <= e <= 100 for e in errors)
    assert errors[-1] == pytest.approx(tested.per_seed[0].test_error)
    assert tested.per_seed[0].test_error == plain.per_seed[0].test_error
    with open(tmp_path / "plain" / "epochs.csv") as f:
        assert all(math.isnan(float(r["test_error"])) for r in csv.DictReader(f))


def test_replay_and_workers_are_settings_and_flags(tmp_path, monkeypatch):
    import hbacli.evaluate

    seen = {}
    monkeypatch.setattr(hbacli.evaluate, "run_evaluation",
                        lambda cfg, **kwargs: seen.setdefault("cfg", cfg))
    result = CliRunner().invoke(app, ["evaluate", "cutout", "--replay", "per-image",
                                      "--workers", "3", "--eval-every", "5",
                                      "--run-dir", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert (seen["cfg"].replay, seen["cfg"].workers, seen["cfg"].eval_every) == \
        ("per-image", 3, 5)
    bad = CliRunner().invoke(app, ["evaluate", "cutout", "--replay", "sometimes"])
    assert bad.exit_code == 2 and "replay" in bad.output
