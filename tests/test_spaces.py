"""Search spaces by name: the stn space against Self-Tuning Networks' own code, a search and a
replay in it, and the combinations that make no sense refused in one line."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from hbacli.catalogue import METHODS, SPACES
from hbacli.cli import app
from hbacli.nets import build_model
from hbacli.nets.dropout import dropout_sites
from hbacli.presets import SearchConfig, resolve_search_config
from hbacli.schedule import Schedule, load_schedule, save_schedule
from hbacli.search import run_search
from hbacli.spaces import SEARCH_SPACES, floor_discrete, get_space

# STN's hyperparameters of its CIFAR AlexNet with --tune_all, in its order
# (asteroidhouse/self-tuning-networks, cnn/util/hyperparameter.py create_hparams; starting
# values from cnn/hypertrain.py's defaults: --start_drop/--start_indrop/--start_fcdrop 0.05,
# --start_hue/-sat/-contrast/-bright 0.05 (hue as logit(2·0.05) on (0, 0.5)), --start_inscale
# 0.05, --start_cutlength 4, --start_cutholes 1; drop_max = 0.9).
STN_HPARAMS = [  # name, range, start
    ("dropout0", (0.0, 0.9), 0.05), ("dropout1", (0.0, 0.9), 0.05),
    ("dropout2", (0.0, 0.9), 0.05), ("dropout3", (0.0, 0.9), 0.05),
    ("dropout4", (0.0, 0.9), 0.05),
    ("hue", (0.0, 0.5), 0.05), ("contrast", (0.0, 1.0), 0.05), ("sat", (0.0, 1.0), 0.05),
    ("bright", (0.0, 1.0), 0.05), ("indropout", (0.0, 1.0), 0.05),
    ("inscale", (0.0, 0.3), 0.05), ("cutlength", (0.0, 24.0), 4.0),
    ("cutholes", (0.0, 4.0), 1.0),
    ("fcdropout0", (0.0, 0.9), 0.05), ("fcdropout1", (0.0, 0.9), 0.05),
]
# STN's AlexNet reads dropout0..4 after its convs and fcdropout0/1 before fc1/fc2
# (cnn/hypermodels/alexnet.py get_drop_probs, get_fcdrop_probs); indropout acts on the input
# in the training loop (cnn/hypertrain.py). HBA §4.3: "7 for data augmentation and 8 for dropout".
STN_DISCRETE = {"cutlength", "cutholes"}   # HyperparameterInfo(discrete=True): floored


def test_the_stn_space_is_stns_fifteen_hyperparameters():
    stn = get_space("stn")
    assert [(s.name, (s.low, s.high), s.start) for s in stn.scalars] == STN_HPARAMS
    assert {s.name for s in stn.scalars if s.discrete} == STN_DISCRETE
    kinds = [s.kind for s in stn.scalars]
    assert kinds.count("dropout") == 8 and kinds.count("augmentation") == 7
    assert stn.size == 15 and not stn.policy
    assert stn.dropout_sites == ("dropout0", "dropout1", "dropout2", "dropout3", "dropout4",
                                 "fcdropout0", "fcdropout1")


def test_every_catalogued_space_and_method_has_an_implementation():
    assert set(SEARCH_SPACES) == set(SPACES)
    config_fields = set(SearchConfig.model_fields)
    for method in METHODS.values():
        assert set(method.settings) <= config_fields


def test_physical_values_round_trip_and_start_where_declared():
    for declared in SEARCH_SPACES.values():
        values = declared.start_values()
        assert np.allclose(declared.to_physical(declared.initial_lambda()), values)
        lam = np.random.default_rng(0).normal(size=(5, declared.size)) * 3
        assert np.allclose(declared.to_lambda(declared.to_physical(lam)), lam, atol=1e-5)
    stn = get_space("stn")
    start = stn.to_physical(stn.initial_lambda())
    assert floor_discrete(start[stn.scalar_index("cutlength")]) == 4
    assert floor_discrete(start[stn.scalar_index("cutholes")]) == 1


def test_alexnet_has_the_stn_spaces_dropout_sites():
    assert tuple(dropout_sites(build_model("alexnet", 10))) == get_space("stn").dropout_sites


# ---- a search in the stn space, and its replay ------------------------------------------------

TINY_STN = dict(space="stn", model="alexnet", strategy="conv", train_size=128, val_size=64,
                batch_size=32, epochs=2, device="cpu", lr=0.01, weight_decay=5e-4, hyper_lr=0.03)


@pytest.fixture(scope="module")
def stn_search(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("stn")
    cfg = resolve_search_config("digits", None, **TINY_STN)
    schedule = run_search(cfg, out=tmp / "stn.json", run_dir=tmp / "run", progress=False)
    return tmp, schedule


def test_a_search_in_the_stn_space_moves_every_hyperparameter(stn_search):
    tmp, schedule = stn_search
    loaded = load_schedule(tmp / "stn.json")
    assert loaded.space_name == "stn" and loaded.epochs == 2
    values = loaded.values()
    stn = get_space("stn")
    assert np.allclose(values[0], stn.start_values(), atol=1e-6)   # entry 0: the start
    end = stn.to_lambda(values[-1])
    # λ moved, every coordinate, dropout rates included (Adam's steps are about α' each)
    moved = np.abs(end - stn.initial_lambda())
    assert (moved > 1e-3).all(), dict(zip(stn.scalar_names, moved.round(4)))
    # the network file is a plain AlexNet
    state = torch.load(tmp / "run" / "network.pt", weights_only=True)
    build_model("alexnet", 10).load_state_dict(state)


def test_the_stn_method_is_one_flag_away():
    hba = resolve_search_config("digits", None, space="stn", model="alexnet")
    stn = resolve_search_config("digits", None, space="stn", model="alexnet", method="stn")
    assert (hba.strategy, hba.perturbation_scale) == ("1st-bn", "fixed")
    assert (stn.strategy, stn.sigma, stn.perturbation_scale, stn.hyper_input) == (
        "all", 0.5, "learned", "raw")
    # a flag still wins over the method's settings
    assert resolve_search_config("digits", None, method="stn", strategy="conv").strategy == "conv"


def test_an_stn_style_search_learns_its_perturbation_scale(tmp_path):
    settings = {k: v for k, v in TINY_STN.items() if k != "strategy"}   # the method's: all
    cfg = resolve_search_config("digits", None, **{**settings, "epochs": 1}, method="stn")
    assert cfg.strategy == "all"
    run_search(cfg, out=tmp_path / "s.json", run_dir=tmp_path / "run", progress=False)
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)
    scale = torch.nn.functional.softplus(state["engine"]["scale_parameter"])
    assert not torch.allclose(scale, torch.full_like(scale, 0.5))   # it moved from sigma
    assert (scale - 0.5).abs().max() < 0.1                          # by Adam-sized steps


def test_replaying_an_stn_schedule_sets_the_networks_dropout_rates(stn_search, tmp_path,
                                                                  monkeypatch):
    from hbacli import trainer
    from hbacli.evaluate import run_evaluation
    from hbacli.presets import resolve_evaluate_config

    schedule = load_schedule(stn_search[0] / "stn.json")
    seen = []   # (epoch, rates set on the network's sites) from the trainer's own model
    original = trainer.SeedTrainer.train_epoch

    def spy(self, epoch):
        out = original(self, epoch)
        seen.append((epoch, {site: module.rates
                             for site, module in dropout_sites(self.model).items()}))
        return out

    monkeypatch.setattr(trainer.SeedTrainer, "train_epoch", spy)
    cfg = resolve_evaluate_config(str(stn_search[0] / "stn.json"), "digits", "alexnet",
                                  train_size=128, epochs=2, batch_size=32, device="cpu",
                                  lr=0.01)
    results = run_evaluation(cfg, tmp_path / "eval.json", tmp_path / "run", progress=False)
    assert np.isfinite(results.summary.test_error.mean)
    scalars = schedule.scalar_values()
    for epoch, rates in seen:
        for site, rate in rates.items():
            assert rate == pytest.approx(scalars[site][epoch], abs=1e-6)


# ---- bad combinations ----------------------------------------------------------------------------

def test_the_stn_space_with_a_network_without_dropout_sites_is_one_line(tmp_path):
    result = CliRunner().invoke(app, ["search", "--space", "stn", "--model", "wrn16_1",
                                      "--epochs", "1", "--device", "cpu",
                                      "--out", str(tmp_path / "s.json")])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "dropout" in lines[0] and "--model alexnet" in lines[0]
    assert not (tmp_path / "s.json").exists()


def test_a_warm_start_from_another_space_is_one_line(tmp_path):
    hba = get_space("hba")
    path = tmp_path / "hba.json"
    save_schedule(Schedule.from_values("hba", hba.start_values()[None]), path)
    result = CliRunner().invoke(app, ["search", "--space", "stn", "--model", "alexnet",
                                      "--strategy", "conv", "--init", str(path), "--epochs",
                                      "1", "--device", "cpu", "--out", str(tmp_path / "s.json")])
    assert result.exit_code == 2, result.output
    assert "hba space" in result.output and len(result.output.strip().splitlines()) == 1


def test_a_version_1_schedule_still_loads_and_replays(tmp_path):
    """examples/digits-schedule.json was written by a search before schedules named a space."""
    import json
    from pathlib import Path

    from hbacli.evaluate import run_evaluation
    from hbacli.presets import resolve_evaluate_config

    path = Path(__file__).parent.parent / "examples" / "digits-schedule.json"
    assert json.loads(path.read_text())["version"] == 1
    assert load_schedule(path).space_name == "hba"
    cfg = resolve_evaluate_config(str(path), "digits", "wrn16_1", train_size=64, epochs=1,
                                  batch_size=32, device="cpu")
    results = run_evaluation(cfg, tmp_path / "eval.json", tmp_path / "run", progress=False)
    assert np.isfinite(results.summary.test_error.mean)


def test_antithetic_pairs_in_the_stn_space_set_one_rate_per_example(tmp_path):
    """Antithetic batches are augmented in two halves; the dropout rates cover the whole batch."""
    cfg = resolve_search_config("digits", None, **{**TINY_STN, "epochs": 1},
                                perturbation="antithetic")
    schedule = run_search(cfg, out=tmp_path / "s.json", run_dir=tmp_path / "run",
                          progress=False)
    assert schedule.space_name == "stn" and np.isfinite(schedule.values()).all()
