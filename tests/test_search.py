"""The HBA search engine on real data (the embedded digits), tiny networks, a few steps, CPU."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from hbacli import space
from hbacli.catalogue import STRATEGIES
from hbacli.checkpoint import config_differences
from hbacli.cli import app
from hbacli.errors import HbaError
from hbacli.plots import top_ops
from hbacli.presets import lr_factor, resolve_search_config
from hbacli.runtime import has_cpp_compiler
from hbacli.schedule import load_schedule
from hbacli.search import LOG_FIELDS, RESUME_IGNORED_FIELDS, run_search
from hbacli.search_engine import SearchEngine

# Small enough for seconds on 2 CPU cores, large enough that λ gets a dozen Adam steps.
TINY = dict(model="wrn16_1", train_size=256, val_size=64, batch_size=32, epochs=3,
            device="cpu")


def tiny_config(**overrides):
    return resolve_search_config("digits", None, **{**TINY, **overrides})


def search(tmp_path, name, cfg, **kwargs):
    return run_search(cfg, out=tmp_path / f"{name}.json", run_dir=tmp_path / name,
                      progress=False, **kwargs)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """One 3-epoch search, shared by the tests that only read its results."""
    tmp = tmp_path_factory.mktemp("uninterrupted")
    return tmp, search(tmp, "run", tiny_config())


# ---- pure helpers ------------------------------------------------------------------------------

def test_cosine_lr_runs_from_one_to_zero_over_all_steps():
    cfg = tiny_config(epochs=4)
    assert lr_factor(0, cfg, 10) == 1.0
    assert lr_factor(20, cfg, 10) == pytest.approx(0.5)
    assert lr_factor(40, cfg, 10) == pytest.approx(0.0, abs=1e-12)


def test_step_lr_drops_tenfold_at_each_milestone_epoch():
    cfg = tiny_config(epochs=6, lr_schedule="step", lr_milestones=[2, 4])
    assert [lr_factor(e * 10, cfg, 10) for e in range(6)] == pytest.approx(
        [1, 1, 0.1, 0.1, 0.01, 0.01])
    assert lr_factor(19, cfg, 10) == 1.0


def test_top_ops_labels_the_most_probable_copies():
    probabilities = np.full(30, 0.05)
    probabilities[4], probabilities[15 + 14] = 0.4, 0.3  # Rotate copy 0, Cutout copy 1
    assert [label for label, _ in top_ops(probabilities, 2)] == ["Rotate#0", "Cutout#1"]


def test_resume_ignores_device_but_not_settings_that_change_the_search():
    saved = tiny_config().model_dump()
    assert config_differences(saved, tiny_config(device="auto").model_dump(),
                              RESUME_IGNORED_FIELDS) == []
    assert config_differences(saved, tiny_config(sigma=0.5).model_dump(),
                              RESUME_IGNORED_FIELDS) == ["sigma: 1.0 → 0.5"]


# ---- the algorithm -------------------------------------------------------------------------------

def test_search_moves_lambda_and_records_every_epoch_in_physical_units(uninterrupted):
    _, schedule = uninterrupted
    probabilities, magnitudes = schedule.probabilities(), schedule.magnitudes()
    assert probabilities.shape == magnitudes.shape == (3, 30)
    last = space.physical_to_lambda(space.join_physical(probabilities[-1], magnitudes[-1]))
    moved = np.abs(last - space.initial_lambda())    # in logits
    # The last entry is λ at the start of epoch 2: 2 epochs × 4 rounds of Adam steps, each
    # about hyper_lr long. Some coordinate kept one direction for most of them, and most moved.
    adam_reach = 2 * 4 * tiny_config().hyper_lr
    assert moved.max() > 0.5 * adam_reach
    assert (moved > 1e-3).sum() > 20
    assert not np.array_equal(probabilities[0], probabilities[-1])  # it keeps moving per epoch


def test_lambda_steps_lower_the_validation_loss(tmp_path):
    """Adam's λ steps go downhill: the same validation data have a lower loss afterwards."""
    from hbacli.datasets import load_dataset

    cfg = tiny_config(val_size=32)  # one validation batch: the λ steps all see it
    splits = load_dataset(cfg.dataset, None, cfg.train_size, cfg.val_size, cfg.split_seed)
    torch.manual_seed(0)
    engine = SearchEngine(cfg, splits, torch.device("cpu"))
    engine.run_epoch(0)  # train φ around the initial λ (λ moves too)
    lam_before = engine.lam.detach().clone()
    loss_before = engine.validation_loss(lam_before)
    images, labels = next(iter(engine.val_loader))
    for _ in range(5):
        engine.hyper_step(images, labels)
    assert not torch.equal(engine.lam.detach(), lam_before)
    assert engine.validation_loss(engine.lam.detach()) < loss_before


def test_lambda_step_leaves_the_hypernetwork_untouched():
    """The λ step gives φ no gradient and no update, and φ trains again afterwards."""
    from hbacli.datasets import load_dataset

    cfg = tiny_config()
    splits = load_dataset(cfg.dataset, None, cfg.train_size, cfg.val_size, cfg.split_seed)
    engine = SearchEngine(cfg, splits, torch.device("cpu"))
    engine.train_step(*next(iter(engine.train_loader)))
    before = {name: (p.detach().clone(), p.grad.clone())
              for name, p in engine.hypernet.named_parameters()}
    engine.hyper_step(*next(iter(engine.val_loader)))
    for name, p in engine.hypernet.named_parameters():
        assert p.requires_grad, name
        assert torch.equal(p, before[name][0]) and torch.equal(p.grad, before[name][1]), name


def test_two_runs_with_one_seed_give_one_schedule_and_another_seed_another(tmp_path):
    # Two epochs: entry 0 is the starting policy, entry 1 the first searched one.
    cfg = tiny_config(epochs=2, train_size=128, warmup_epochs=0)
    first, second = search(tmp_path, "a", cfg), search(tmp_path, "b", cfg)
    other = search(tmp_path, "c", tiny_config(epochs=2, train_size=128, warmup_epochs=0, seed=1))
    assert np.array_equal(first.probabilities(), second.probabilities())
    assert np.array_equal(first.magnitudes(), second.magnitudes(), equal_nan=True)
    assert not np.array_equal(first.probabilities(), other.probabilities())


def test_warmup_epochs_train_the_hypernetwork_only(tmp_path):
    cfg = tiny_config(epochs=3, warmup_epochs=1, val_bn_mode="eval", train_size=64,
                      val_size=32)
    probabilities = search(tmp_path, "run", cfg).probabilities()
    initial, _ = space.split_physical(space.lambda_to_physical(space.initial_lambda()))
    # Entry e is λ at the start of epoch e: warm-up leaves entries 0 and 1 at the start.
    assert np.allclose(probabilities[:2], initial, rtol=0, atol=1e-7)  # float32 λ, untouched
    assert not np.allclose(probabilities[2], initial, rtol=0, atol=1e-4)


def test_entry_zero_is_the_starting_policy(uninterrupted):
    """Entry e of a schedule is the λ in effect during epoch e (as at its start)."""
    _, schedule = uninterrupted
    start = space.join_physical(*schedule.at_epoch(0))
    assert np.allclose(start, space.lambda_to_physical(space.initial_lambda()), rtol=0,
                       atol=1e-6)


def _schedule_file(path, probabilities, magnitudes):
    from hbacli.schedule import Schedule, save_schedule

    save_schedule(Schedule.from_arrays(probabilities, magnitudes), path)
    return path


def test_init_starts_lambda_from_a_schedule_epoch(tmp_path):
    rng = np.random.default_rng(0)
    values = space.lambda_to_physical(rng.normal(0, 1.5, (2, space.NUM_HYPERPARAMETERS)))
    values[1, 0] = 0.0     # a probability at the end of its range: kept just inside it
    init = _schedule_file(tmp_path / "init.json", *space.split_physical(values))
    schedule = search(tmp_path, "run", tiny_config(epochs=2, init=str(init), init_epoch=1))
    start = space.join_physical(*schedule.at_epoch(0))
    margin = 1e-3 * (space.LAMBDA_HIGH - space.LAMBDA_LOW)
    assert np.all(np.abs(start - values[1]) <= margin + 1e-5)
    assert start[0] > 0
    assert not np.allclose(space.join_physical(*schedule.at_epoch(1)), start)   # it moves on


def test_init_is_validated_before_the_search_starts(tmp_path):
    good = _schedule_file(tmp_path / "one.json", *_initial_arrays())
    broken = tmp_path / "broken.json"
    broken.write_text('{"format": "hba-schedule", "version": 1, "epochs": 1}')
    base = ["search", "--dataset", "digits", "--out", str(tmp_path / "s.json"), "--run-dir",
            str(tmp_path / "run")]
    cases = [(["--init", str(good), "--init-epoch", "1"], "past the end"),
             (["--init", str(broken)], str(broken)),
             (["--init", str(tmp_path / "missing.json")], "missing.json")]
    for extra, message in cases:
        result = CliRunner().invoke(app, base + extra)
        assert result.exit_code == 2, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0]
    assert not (tmp_path / "run").exists()


def _initial_arrays():
    probabilities, magnitudes = space.split_physical(space.lambda_to_physical(
        space.initial_lambda()))
    return probabilities[None], magnitudes[None]


def test_centred_hyper_layers_start_as_the_plain_network():
    """Fed λ − λ0, the hypernetwork at λ0 is exactly φ0 (its plain network), whatever λ0."""
    from hbacli.datasets import load_dataset

    cfg = tiny_config()
    splits = load_dataset(cfg.dataset, None, cfg.train_size, cfg.val_size, cfg.split_seed)
    engine = SearchEngine(cfg, splits, torch.device("cpu"))
    engine.hypernet.eval()
    for layer in engine.hypernet.hyper_layers:     # make φV matter
        torch.nn.init.normal_(layer.weight_v, std=1.0)
    x = engine.pipeline.eval(splits.val_images[:8])
    plain = engine.hypernet.to_plain().eval()
    with torch.no_grad():
        assert torch.equal(engine.hypernet(x, engine.hyper_input(engine.lam)), plain(x))
        raw = engine.hypernet(x, engine.lam)
    assert not torch.allclose(raw, plain(x))


def _common_mode_share(tmp_path, name, **overrides) -> float:
    """cos(λ − λ0, all-ones) after a tiny search: +1 when every coordinate moved up alike."""
    from hbacli.search import CHECKPOINT_NAME

    search(tmp_path, name, tiny_config(**overrides))
    state = torch.load(tmp_path / name / CHECKPOINT_NAME, weights_only=True)["engine"]
    change = (state["lam"] - state["lam_origin"]).double()
    return float(change.mean() / change.square().mean().sqrt())


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.slow
def test_lambda_moves_per_coordinate_not_all_together(tmp_path, seed):
    """The common-mode artefact of issue 11: fed raw logits (all ≈ −2.94), the hyper-layers make
    the mean of λ a global knob and all 54 coordinates rise together (measured on this tiny
    search, seeds 0–3: cos 0.82–0.94 with the all-ones direction, 47–52 of 54 rising). Fed
    λ − λ0, they move both ways (cos −0.30…−0.03). Eval-mode BatchNorm on the λ step, where the
    artefact was found; the default (train mode) must not bring it back either."""
    assert abs(_common_mode_share(tmp_path, "centred", seed=seed, val_bn_mode="eval")) < 0.5
    assert abs(_common_mode_share(tmp_path, "default", seed=seed)) < 0.5
    assert _common_mode_share(tmp_path, "raw", seed=seed, hyper_input="raw",
                              val_bn_mode="eval") > 0.7


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_weight_sharing_strategy_runs(tmp_path, strategy):
    cfg = tiny_config(strategy=strategy, epochs=1, train_size=64, val_size=32)
    schedule = search(tmp_path, "run", cfg)
    assert schedule.epochs == 1
    assert schedule.provenance.strategy == strategy


# ---- files, interruption, resume -----------------------------------------------------------------

def test_run_directory_holds_config_schedule_log_and_checkpoint(uninterrupted):
    tmp, schedule = uninterrupted
    run_dir = tmp / "run"
    saved_config = json.loads((run_dir / "config.json").read_text())
    # as resolved: precision "auto" is saved as what it chose (fp32 on the CPU)
    assert saved_config == tiny_config(precision="fp32").model_dump(mode="json")
    assert load_schedule(tmp / "run.json") == schedule
    assert np.array_equal(load_schedule(run_dir / "schedule.json").probabilities(),
                          schedule.probabilities())
    with open(run_dir / "log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == LOG_FIELDS
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert all(0 <= float(r["val_accuracy"]) <= 1 and float(r["images_per_second"]) > 0
               for r in rows)
    assert rows[0]["top_ops"].count("#") == 3
    assert (run_dir / "checkpoint.pt").is_file()
    provenance = schedule.provenance
    assert (provenance.dataset, provenance.model, provenance.epochs) == ("digits", "wrn16_1", 3)
    assert (provenance.train_size, provenance.val_size) == (256, 64)
    assert provenance.config["sigma"] == 1.0 and provenance.search_seconds > 0


def test_interrupted_then_resumed_equals_uninterrupted(tmp_path, uninterrupted):
    _, expected = uninterrupted
    cfg = tiny_config()

    def interrupt_after_two(record):
        if record.epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        search(tmp_path, "run", cfg, on_epoch_end=interrupt_after_two)
    assert load_schedule(tmp_path / "run" / "schedule.json").epochs == 2
    assert not (tmp_path / "run.json").exists()
    with pytest.raises(HbaError, match="--resume"):
        search(tmp_path, "run", cfg)
    with pytest.raises(HbaError, match="epochs: 3 → 4"):
        search(tmp_path, "run", tiny_config(epochs=4), resume=True)
    resumed = search(tmp_path, "run", cfg, resume=True)
    assert np.array_equal(resumed.probabilities(), expected.probabilities())
    assert np.array_equal(resumed.magnitudes(), expected.magnitudes(), equal_nan=True)
    with open(tmp_path / "run" / "log.csv", newline="") as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == [1, 2, 3]
    again = search(tmp_path, "run", cfg, resume=True)  # a finished run only rewrites its files
    assert np.array_equal(again.probabilities(), expected.probabilities())


@pytest.mark.skipif(not has_cpp_compiler(), reason="torch.compile needs a C++ compiler")
@pytest.mark.slow
def test_compiled_search_moves_lambda_and_its_checkpoint_resumes_uncompiled(tmp_path):
    """--compile: torch.compile in place, so a checkpoint holds the plain keys and a run can go
    on without it (compilation alone takes ~30 s here: one short run)."""
    compiled = tiny_config(epochs=3, warmup_epochs=0, compile=True)

    def stop_after_two(record):
        if record.epoch == 2:      # 1-based, as the log prints it
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        search(tmp_path, "run", compiled, on_epoch_end=stop_after_two)
    # Entry 1 is λ at the start of epoch 1: after epoch 0's λ steps, which ran compiled.
    first = load_schedule(tmp_path / "run" / "schedule.json").probabilities()
    assert np.abs(first[1] - space.INITIAL_FRACTION).max() > 1e-4
    resumed = search(tmp_path, "run", tiny_config(epochs=3, warmup_epochs=0), resume=True)
    assert resumed.epochs == 3 and np.array_equal(resumed.probabilities()[:2], first[:2])


def test_compile_without_a_cpp_compiler_is_a_one_line_error(monkeypatch):
    from hbacli import runtime

    monkeypatch.setattr(runtime.shutil, "which", lambda name: None)
    with pytest.raises(HbaError, match="C\\+\\+ compiler"):
        runtime.compile_network(torch.nn.Linear(2, 2), torch.device("cpu"))


def test_resume_without_a_checkpoint_is_a_one_line_error(tmp_path):
    with pytest.raises(HbaError, match="nothing to resume"):
        search(tmp_path, "run", tiny_config(), resume=True)


# ---- the command line ----------------------------------------------------------------------------

def invoke(tmp_path, *args):
    return CliRunner().invoke(app, ["search", "--dataset", "digits", "--out",
                                    str(tmp_path / "s.json"), "--run-dir",
                                    str(tmp_path / "run"), *args])


def test_cli_search_prints_progress_lines_without_a_terminal(tmp_path):
    result = invoke(tmp_path, "--model", "wrn16_1", "--epochs", "1", "--train-size", "64",
                    "--val-size", "32", "--batch-size", "32", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "epoch 1/1" in result.output and "img/s" in result.output
    assert f"schedule written to {tmp_path / 's.json'}" in result.output
    assert load_schedule(tmp_path / "s.json").provenance.command.split()[0] == "hba"


@pytest.mark.parametrize("args, message", [
    (["--batch-size", "64", "--train-size", "100"], "batch size 64 is too large"),
    (["--batch-size", "64", "--val-size", "40"], "larger than the validation data"),
    (["--model", "resnet9000"], "unknown model 'resnet9000'"),
    (["--strategy", "2nd-bn"], "strategy"),
    (["--epochs", "0"], "epochs"),
    (["--resume"], "nothing to resume"),
])
def test_cli_rejects_impossible_settings_on_one_line(tmp_path, args, message):
    result = invoke(tmp_path, "--model", "wrn16_1", "--device", "cpu", *args)
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines


def test_cli_rejects_an_unknown_dataset_and_a_malformed_flag(tmp_path):
    result = CliRunner().invoke(app, ["search", "--dataset", "mnist-9000"])
    assert result.exit_code == 2 and "unknown dataset 'mnist-9000'" in result.output
    assert len(result.output.strip().splitlines()) == 1
    result = invoke(tmp_path, "--epochs", "many")  # parsed by typer: its usage message
    assert result.exit_code == 2 and "Invalid value for '--epochs'" in result.output


def test_cli_explains_a_damaged_checkpoint_and_an_unwritable_out(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "checkpoint.pt").write_bytes(b"not a checkpoint")
    result = invoke(tmp_path, "--resume")
    assert result.exit_code == 2 and "damaged or not an hba search checkpoint" in result.output
    (tmp_path / "a-file").write_text("")
    result = CliRunner().invoke(app, ["search", "--dataset", "digits", "--out",
                                      str(tmp_path / "a-file" / "s.json"), "--run-dir",
                                      str(tmp_path / "other")])
    assert result.exit_code == 2
    assert "folder of --out" in result.output and "is a file" in result.output
    assert not (tmp_path / "other").exists()


def test_a_search_whose_data_are_missing_leaves_no_folder_behind(tmp_path):
    empty = tmp_path / "no-data"
    empty.mkdir()
    result = CliRunner().invoke(app, [
        "search", "--dataset", "imagefolder:" + str(empty / "mine"), "--out",
        str(tmp_path / "out" / "s.json"), "--run-dir", str(tmp_path / "runs" / "one")])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["no-data"]


def test_search_writes_the_plain_network_at_the_final_lambda(uninterrupted):
    """network.pt: the state dict of --model holding θ̂φ(λ_final), loaded by the README's one
    line, computes what the hypernetwork computes at the final λ (eval mode)."""
    from hbacli.datasets import load_dataset
    from hbacli.nets import build_model
    from hbacli.search import CHECKPOINT_NAME, NETWORK_NAME

    tmp, _ = uninterrupted
    cfg = tiny_config()
    network = build_model(cfg.model, 10)
    network.load_state_dict(torch.load(tmp / "run" / NETWORK_NAME))   # the README's one line
    network.eval()
    splits = load_dataset(cfg.dataset, None, cfg.train_size, cfg.val_size, cfg.split_seed)
    engine = SearchEngine(cfg, splits, torch.device("cpu"))
    engine.load_state_dict(torch.load(tmp / "run" / CHECKPOINT_NAME, weights_only=True)["engine"])
    assert not torch.equal(engine.lam, engine.lam_origin)          # λ moved: a real check
    engine.hypernet.eval()
    x = engine.pipeline.eval(splits.val_images[:16])
    with torch.no_grad():
        expected = engine.hypernet(x, engine.hyper_input(engine.lam))
        assert torch.allclose(network(x), expected, atol=1e-5)
        assert not torch.allclose(network(x), engine.hypernet(x, engine.lam), atol=1e-3)


def test_antithetic_pairs_share_their_draws_and_mirror_their_noise():
    """perturbation=antithetic: each image twice, with λ0 + ε and λ0 − ε, and the same random
    draws (ops, signs, crops, Cutout): with σ = 0 the two copies are the same pixels."""
    from hbacli.datasets import load_dataset

    cfg = tiny_config(perturbation="antithetic")
    splits = load_dataset(cfg.dataset, None, cfg.train_size, cfg.val_size, cfg.split_seed)
    seen = []
    for sigma in (0.0, 1.0):
        engine = SearchEngine(cfg.model_copy(update={"sigma": sigma}), splits, torch.device("cpu"))
        engine.train_net.register_forward_pre_hook(lambda _, args: seen.append(args))
        images, labels = next(iter(engine.train_loader))
        engine.train_step(images, labels)
    (same_x, _), (x, fed) = seen
    half = cfg.batch_size // 2
    assert x.shape[0] == 2 * half
    assert torch.equal(same_x[:half], same_x[half:])
    # centred: ±ε, up to float rounding of (λ0 ± ε) − λ0
    assert torch.allclose(fed[:half], -fed[half:], atol=1e-6) and fed.abs().max() > 1
    assert not torch.equal(x[:half], x[half:])     # ε moved some op across its threshold
