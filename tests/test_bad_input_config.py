"""What a user might get wrong in a run's settings (flags, a ``--config`` file, a resume), and
the one-line refusal or the right reading each one must get (issue 13, hostile trial).

Every case goes through the real resolution: ``hba search`` / ``hba evaluate`` by typer's
CliRunner (the run itself replaced by a function that keeps the config), or
``resolve_search_config`` / ``resolve_evaluate_config`` with a real file.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import hbacli.evaluate
import hbacli.search
from hbacli.checkpoint import checkpoint_bytes, config_differences, read_checkpoint
from hbacli.cli import app
from hbacli.errors import HbaError
from hbacli.presets import (
    EvaluateConfig,
    SearchConfig,
    resolve_evaluate_config,
    resolve_search_config,
)


@pytest.fixture
def hba(monkeypatch, tmp_path):
    """Run `hba ARGS…` with search/evaluate replaced: returns (exit code, output, config)."""
    seen = {}
    monkeypatch.setattr(hbacli.search, "run_search", lambda cfg, **kw: seen.setdefault("cfg", cfg))
    monkeypatch.setattr(hbacli.evaluate, "run_evaluation",
                        lambda cfg, **kw: seen.setdefault("cfg", cfg))

    def run(*args: str):
        seen.clear()
        result = CliRunner().invoke(app, [*args, "--run-dir", str(tmp_path / "run")])
        return result.exit_code, result.output, seen.get("cfg")

    return run


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    (path.write_bytes if isinstance(content, bytes) else path.write_text)(content)
    return path


def assert_one_line_refusal(code: int, output: str, *fragments: str) -> None:
    assert code == 2, output
    assert output.startswith("error: ") and output.strip().count("\n") == 0, output
    for fragment in fragments:
        assert fragment in output, output


# --- flags a user might type -----------------------------------------------------------------

FINITE = "should be a finite number"
BAD_SEARCH_FLAGS = [
    # (what the user typed after `hba search --dataset digits`, what the error must say)
    (["--lr", "inf"], f"invalid setting lr: Input {FINITE}"),
    (["--lr", "nan"], f"invalid setting lr: Input {FINITE}"),
    (["--lr", "-inf"], f"invalid setting lr: Input {FINITE}"),
    (["--hyper-lr", "inf"], f"invalid setting hyper_lr: Input {FINITE}"),
    (["--hyper-lr", "nan"], f"invalid setting hyper_lr: Input {FINITE}"),
    (["--weight-decay", "inf"], f"invalid setting weight_decay: Input {FINITE}"),
    (["--weight-decay", "nan"], f"invalid setting weight_decay: Input {FINITE}"),
    (["--sigma", "inf"], f"invalid setting sigma: Input {FINITE}"),
    (["--seed", "99999999999999999999"], "invalid setting seed:"),
    (["--seed", str(2**63)], "invalid setting seed:"),
    (["--seed", "-1"], "invalid setting seed:"),
    (["--val-size", "0"], "invalid setting val_size: Input should be greater than 0"),
    (["--lr-schedule", "step", "--lr-milestones", "3,x"],
     "--lr-milestones must be comma-separated integers, got '3,x'"),
    (["--lr-schedule", "step", "--lr-milestones", "5,2"],
     "invalid setting lr_milestones: must increase"),
    (["--lr-schedule", "step", "--lr-milestones", ","], "--lr-milestones is empty"),
    (["--strategy", "everything"], "invalid setting strategy: Input should be"),
    (["--precision", "fp8"], "invalid setting precision:"),
    (["--hyper-v-init", "nan"], f"invalid setting hyper_v_init: Input {FINITE}"),
]


def _flag_id(value):
    return " ".join(value) if isinstance(value, list) else value


@pytest.mark.parametrize("flags, fragment", BAD_SEARCH_FLAGS, ids=_flag_id)
def test_search_refuses_a_bad_flag_on_one_line_naming_the_field(hba, flags, fragment):
    code, output, cfg = hba("search", "--dataset", "digits", *flags)
    assert_one_line_refusal(code, output, fragment)
    assert cfg is None


BAD_EVALUATE_FLAGS = [
    # (what the user typed after `hba evaluate none`, what the error must name)
    (["--lr", "inf"], f"invalid setting lr: Input {FINITE}"),
    (["--lr", "nan"], f"invalid setting lr: Input {FINITE}"),
    (["--weight-decay", "inf"], f"invalid setting weight_decay: Input {FINITE}"),
    (["--seeds", "1,1"], "duplicate seed 1"),
    (["--seeds", "0,1,2,1"], "duplicate seed 1"),
    (["--seeds", "99999999999999999999"], "invalid setting seeds"),
    (["--seeds", "-3"], "invalid setting seeds"),
    (["--seeds", "0,one"], "--seeds must be comma-separated integers, got '0,one'"),
    (["--seeds", ""], "--seeds is empty"),
    (["--replay", "sometimes"], "invalid setting replay:"),
    (["--val-size", "-1"], "invalid setting val_size:"),
    (["--momentum", "1"], "invalid setting momentum:"),
]


@pytest.mark.parametrize("flags, fragment", BAD_EVALUATE_FLAGS, ids=_flag_id)
def test_evaluate_refuses_a_bad_flag_on_one_line(hba, flags, fragment):
    code, output, cfg = hba("evaluate", "none", *flags)
    assert_one_line_refusal(code, output, fragment)
    assert cfg is None


def _float_fields(model) -> list[str]:
    return [name for name, field in model.model_fields.items() if field.annotation is float]


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")], ids=str)
def test_every_float_setting_refuses_inf_and_nan(value):
    """Not only the flags above: every float field, now and any added later."""
    for resolve, model in ((lambda **o: resolve_search_config("digits", None, **o), SearchConfig),
                           (lambda **o: resolve_evaluate_config("none", "digits", None, **o),
                            EvaluateConfig)):
        fields = _float_fields(model)
        assert {"lr", "weight_decay", "momentum"} <= set(fields)
        for field in fields:
            with pytest.raises(HbaError, match=f"^invalid setting {field}: Input {FINITE}"):
                resolve(**{field: value})


def test_seeds_run_up_to_the_limit_torch_and_numpy_take_and_stop_there(hba):
    code, output, cfg = hba("search", "--dataset", "digits", "--seed", str(2**63 - 1))
    assert code == 0, output
    torch.Generator().manual_seed(cfg.seed)   # what the search does with it
    code, output, _ = hba("search", "--dataset", "digits", "--seed", str(2**63))
    assert_one_line_refusal(code, output, "invalid setting seed: Input should be less than")


# --- settings files a user might write -------------------------------------------------------

BAD_SEARCH_FILES = [
    # (the --config file's text, what the one-line error must contain)
    ("lr: .inf\n", f"invalid setting lr: Input {FINITE}"),
    ("lr: .nan\n", f"invalid setting lr: Input {FINITE}"),
    ("hyper_lr: .inf\n", f"invalid setting hyper_lr: Input {FINITE}"),
    ("weight_decay: .inf\n", f"invalid setting weight_decay: Input {FINITE}"),
    ("momentum: .nan\n", f"invalid setting momentum: Input {FINITE}"),
    ("sigma: .inf\n", f"invalid setting sigma: Input {FINITE}"),
    ("hyper_v_init: .inf\n", f"invalid setting hyper_v_init: Input {FINITE}"),
    ("lr: true\n", "invalid setting lr:"),
    ("epochs: true\n", "invalid setting epochs:"),
    ("epochs: 2.5\n", "invalid setting epochs:"),
    ("epochs: '20'\n", "invalid setting epochs:"),
    ("batch_size: 64.0\n", "invalid setting batch_size:"),
    ("train_size: true\n", "invalid setting train_size:"),
    ("train_steps: true\n", "invalid setting train_steps:"),
    ("val_steps: false\n", "invalid setting val_steps:"),
    ("init_epoch: true\n", "invalid setting init_epoch:"),
    ("seed: 99999999999999999999\n", "invalid setting seed:"),
    ("seed: true\n", "invalid setting seed:"),
    ("split_seed: -1\n", "invalid setting split_seed:"),
    ("split_seed: 99999999999999999999\n", "invalid setting split_seed:"),
    ("lr_schedule: step\nlr_milestones: [-5]\n", "invalid setting lr_milestones"),
    ("lr_schedule: step\nlr_milestones: [0]\n", "invalid setting lr_milestones"),
    ("lr_schedule: step\nlr_milestones: [10, 5]\n", "invalid setting lr_milestones: must increase"),
    ("lr_schedule: step\nlr_milestones: [5, 5]\n", "invalid setting lr_milestones: must increase"),
    ("lr_schedule: step\nlr_milestones: [true]\n", "invalid setting lr_milestones"),
    ("lr_schedule: step\nlr_milestones: [2.5]\n", "invalid setting lr_milestones"),
]


@pytest.mark.parametrize("text, fragment", BAD_SEARCH_FILES)
def test_search_refuses_a_bad_setting_in_the_config_file(tmp_path, text, fragment):
    config = write(tmp_path, "settings.yaml", text)
    with pytest.raises(HbaError) as caught:
        resolve_search_config("digits", config)
    assert fragment in str(caught.value) and "\n" not in str(caught.value)


BAD_EVALUATE_FILES = [
    ("seeds: [1, 1]\n", "duplicate seed 1"),
    ("seeds: [true]\n", "invalid setting seeds"),
    ("seeds: [-1]\n", "invalid setting seeds"),
    ("seeds: [99999999999999999999]\n", "invalid setting seeds"),
    ("split_seed: -1\n", "invalid setting split_seed:"),
    ("epochs: true\n", "invalid setting epochs:"),
    ("val_size: false\n", "invalid setting val_size:"),
    ("lr: .inf\n", f"invalid setting lr: Input {FINITE}"),
    ("momentum: .nan\n", f"invalid setting momentum: Input {FINITE}"),
    ("lr_schedule: step\nlr_milestones: [-1]\n", "invalid setting lr_milestones"),
    ("lr_schedule: step\nlr_milestones: [3, 2]\n", "invalid setting lr_milestones: must increase"),
]


@pytest.mark.parametrize("text, fragment", BAD_EVALUATE_FILES)
def test_evaluate_refuses_a_bad_setting_in_the_config_file(tmp_path, text, fragment):
    config = write(tmp_path, "settings.yaml", text)
    with pytest.raises(HbaError) as caught:
        resolve_evaluate_config("none", "digits", None, config)
    assert fragment in str(caught.value) and "\n" not in str(caught.value)


def test_json_infinity_and_nan_in_a_config_file_are_refused(tmp_path, hba):
    for text, field in (('{"lr": Infinity}', "lr"), ('{"weight_decay": NaN}', "weight_decay"),
                        ('{"hyper_lr": -Infinity}', "hyper_lr")):
        config = write(tmp_path, "settings.json", text)
        code, output, _ = hba("search", "--dataset", "digits", "--config", str(config))
        assert_one_line_refusal(code, output, f"invalid setting {field}: Input {FINITE}")


def test_a_config_file_that_is_not_utf8_is_one_line_naming_the_file(tmp_path, hba):
    config = write(tmp_path, "latin1.yaml", "epochs: 3\n# café\n".encode("latin-1"))
    for command in (["search", "--dataset", "digits"], ["evaluate", "none"]):
        code, output, _ = hba(*command, "--config", str(config))
        assert_one_line_refusal(code, output, "latin1.yaml", "UTF-8")


def test_good_files_still_read_step_milestones_and_yaml_float_spellings(tmp_path):
    config = write(tmp_path, "ok.yaml", "epochs: 30\nlr_schedule: step\nlr_milestones: [10, 20]\n"
                                        "lr: 1e-2\nweight_decay: 0\nmomentum: 0\n")
    cfg = resolve_search_config("digits", config)
    # YAML 1.1 reads 1e-2 as a string and 0 as an int: both are fine numbers for a float field.
    assert (cfg.epochs, cfg.lr_milestones, cfg.lr, cfg.weight_decay) == (30, [10, 20], 0.01, 0.0)
    # A milestone at or past the last epoch never fires: allowed, so --epochs can shorten a
    # step-schedule preset (imagenet: 90, 180, 240) without a config file.
    assert resolve_search_config("imagenet", None, epochs=10).lr_milestones == [90, 180, 240]


# --- flags, file and preset: who wins --------------------------------------------------------

# Every SearchConfig field: (the flag and its value, the file's value, the value the flag gives).
# The file's values differ from the digits preset, the flags' from the file's.
SEARCH_FIELDS = {
    "dataset": (["--dataset", "digits"], "reduced-cifar10", "digits"),
    "data_dir": (["--data-dir", "flag-data"], "file-data", "flag-data"),
    "model": (["--model", "wrn28_2"], "wrn40_2", "wrn28_2"),
    "strategy": (["--strategy", "conv"], "bn", "conv"),
    "space": (["--space", "hba"], "stn", "hba"),
    "method": (["--method", "hba"], "stn", "hba"),
    "perturbation_scale": (["--perturbation-scale", "fixed"], "learned", "fixed"),
    "entropy_weight": (["--entropy-weight", "0.001"], 0.002, 0.001),
    "epochs": (["--epochs", "7"], 9, 7),
    "batch_size": (["--batch-size", "16"], 32, 16),
    "train_size": (["--train-size", "300"], 200, 300),
    "val_size": (["--val-size", "90"], 80, 90),
    "seed": (["--seed", "5"], 4, 5),
    "lr": (["--lr", "0.2"], 0.3, 0.2),
    "lr_schedule": (["--lr-schedule", "constant"], "step", "constant"),
    "weight_decay": (["--weight-decay", "0.02"], 0.03, 0.02),
    "hyper_lr": (["--hyper-lr", "0.4"], 0.5, 0.4),
    "sigma": (["--sigma", "0.6"], 0.7, 0.6),
    "train_steps": (["--train-steps", "3"], 4, 3),
    "val_steps": (["--val-steps", "5"], 6, 5),
    "warmup_epochs": (["--warmup-epochs", "2"], 1, 2),
    "val_bn_mode": (["--val-bn-mode", "eval"], "train", "eval"),
    "hyper_input": (["--hyper-input", "raw"], "centred", "raw"),
    "init": (["--init", "flag.json"], "file.json", "flag.json"),
    "init_epoch": (["--init-epoch", "3"], 2, 3),
    "flip": (["--flip"], False, True),
    "image_size": (["--image-size", "40"], 96, 40),
    "precision": (["--precision", "bf16"], "fp32", "bf16"),
    "device": (["--device", "cpu"], "cuda", "cpu"),
    "compile": (["--no-compile"], True, False),
    "split_seed": (["--split-seed", "12"], 11, 12),
    "lr_milestones": (["--lr-milestones", "4,8"], [3, 6], [4, 8]),
    "momentum": (["--momentum", "0.6"], 0.5, 0.6),
    "nesterov": (["--nesterov"], False, True),
    "hyper_v_init": (["--hyper-v-init", "0.03"], 0.02, 0.03),
    "perturbation": (["--perturbation", "antithetic"], "independent", "antithetic"),
}


def test_every_search_field_has_a_precedence_case():
    """Every field is a flag too (the options are generated from the model)."""
    assert set(SEARCH_FIELDS) == set(SearchConfig.model_fields)


def _file_with_every_field(tmp_path: Path, fields: dict) -> Path:
    return write(tmp_path, "every.yaml", json.dumps({k: v[1] for k, v in fields.items()}))


def test_every_search_flag_beats_the_config_file(tmp_path, hba):
    """One flag at a time, against a file that sets every field: the flag's value is used."""
    config = _file_with_every_field(tmp_path, SEARCH_FIELDS)
    lost = {}
    for field, (flags, _, flag_value) in SEARCH_FIELDS.items():
        dataset = [] if field == "dataset" else ["--dataset", "reduced-cifar10"]
        code, output, cfg = hba("search", *dataset, *flags, "--config", str(config))
        assert code == 0, output
        if getattr(cfg, field) != flag_value:
            lost[field] = getattr(cfg, field)
    assert lost == {}, f"the file won over these flags: {lost}"


def test_the_config_file_beats_the_preset_and_unset_flags_change_nothing(tmp_path, hba):
    config = _file_with_every_field(tmp_path, SEARCH_FIELDS)
    code, output, cfg = hba("search", "--dataset", "reduced-cifar10", "--config", str(config))
    assert code == 0, output
    for field, (_, file_value, _) in SEARCH_FIELDS.items():
        assert getattr(cfg, field) == file_value, field


def test_a_dataset_in_the_file_is_used_when_no_dataset_is_given(tmp_path):
    config = write(tmp_path, "d.yaml", "dataset: reduced-svhn\n")
    cfg = resolve_search_config(None, config)
    assert (cfg.dataset, cfg.lr, cfg.epochs) == ("reduced-svhn", 0.01, 160)   # its Table 8 row


def test_the_dataset_flag_picks_the_preset_even_when_the_file_names_another(tmp_path, hba):
    config = write(tmp_path, "d.yaml", "dataset: reduced-cifar10\n")
    code, output, cfg = hba("search", "--dataset", "digits", "--config", str(config))
    assert code == 0, output
    assert (cfg.dataset, cfg.model, cfg.epochs, cfg.batch_size) == ("digits", "wrn16_1", 20, 64)


EVALUATE_FIELDS = {
    "dataset": (["--dataset", "digits"], "cifar10", "digits"),
    "data_dir": (["--data-dir", "flag-data"], "file-data", "flag-data"),
    "model": (["--model", "wrn28_2"], "wrn40_2", "wrn28_2"),
    "epochs": (["--epochs", "7"], 9, 7),
    "batch_size": (["--batch-size", "16"], 32, 16),
    "lr": (["--lr", "0.2"], 0.3, 0.2),
    "weight_decay": (["--weight-decay", "0.02"], 0.03, 0.02),
    "train_size": (["--train-size", "300"], 200, 300),
    "seeds": (["--seeds", "3,4"], [5, 6], [3, 4]),
    "flip": (["--flip"], False, True),
    "image_size": (["--image-size", "40"], 96, 40),
    "precision": (["--precision", "bf16"], "fp32", "bf16"),
    "init_weights": (["--init-weights", "flag.pt"], "file.pt", "flag.pt"),
    "replay": (["--replay", "per-image"], "batched", "per-image"),
    "workers": (["--workers", "2"], 5, 2),
    "eval_every": (["--eval-every", "3"], 4, 3),
    "device": (["--device", "cpu"], "cuda", "cpu"),
    "compile": (["--no-compile"], True, False),
    "val_size": (["--val-size", "60"], 50, 60),
    "split_seed": (["--split-seed", "12"], 11, 12),
    "lr_schedule": (["--lr-schedule", "constant"], "step", "constant"),
    "lr_milestones": (["--lr-milestones", "4,8"], [3, 6], [4, 8]),
    "momentum": (["--momentum", "0.6"], 0.5, 0.6),
    "nesterov": (["--nesterov"], False, True),
}


def test_every_evaluate_field_has_a_precedence_case():
    """Every field but the POLICY argument is a flag too."""
    assert set(EVALUATE_FIELDS) | {"policy"} == set(EvaluateConfig.model_fields)


def test_every_evaluate_flag_beats_the_config_file(tmp_path, hba):
    config = _file_with_every_field(tmp_path, EVALUATE_FIELDS)
    lost = {}
    for field, (flags, _, flag_value) in EVALUATE_FIELDS.items():
        code, output, cfg = hba("evaluate", "none", *flags, "--config", str(config))
        assert code == 0, output
        if getattr(cfg, field) != flag_value:
            lost[field] = getattr(cfg, field)
    assert lost == {}, f"the file won over these flags: {lost}"


def test_the_evaluate_file_beats_the_preset_when_no_flag_is_given(tmp_path):
    """Through the resolve function: `hba evaluate` passes --dataset and --seeds as given, None
    when not typed (see test_the_evaluate_cli_leaves_dataset_and_seeds_to_the_file)."""
    config = _file_with_every_field(tmp_path, EVALUATE_FIELDS)
    cfg = resolve_evaluate_config("none", None, None, config)
    for field, (_, file_value, _) in EVALUATE_FIELDS.items():
        assert getattr(cfg, field) == file_value, field


def test_evaluate_takes_dataset_and_model_presets_from_the_file_when_not_flagged(tmp_path):
    config = write(tmp_path, "d.yaml", "dataset: svhn\nmodel: shake26_2x96d\n")
    cfg = resolve_evaluate_config("none", None, None, config)
    assert (cfg.dataset, cfg.model, cfg.lr, cfg.weight_decay) == ("svhn", "shake26_2x96d",
                                                                  0.01, 1.5e-4)   # Table 9 row
    assert resolve_evaluate_config("none", None, None).dataset == "digits"      # the default


def test_evaluate_model_flag_picks_the_preset_even_when_the_file_names_another(tmp_path, hba):
    config = write(tmp_path, "m.yaml", "model: shake26_2x96d\ndataset: svhn\n")
    code, output, cfg = hba("evaluate", "none", "--dataset", "cifar10", "--model", "wrn40_2",
                            "--config", str(config))
    assert code == 0, output
    assert (cfg.dataset, cfg.model, cfg.lr, cfg.epochs) == ("cifar10", "wrn40_2", 0.1, 200)


def test_the_evaluate_cli_leaves_dataset_and_seeds_to_the_file(tmp_path, hba):
    config = write(tmp_path, "d.yaml", "dataset: cifar10\nseeds: [1, 2]\n")
    code, output, cfg = hba("evaluate", "none", "--config", str(config))
    assert code == 0, output
    assert (cfg.dataset, cfg.seeds, cfg.lr) == ("cifar10", [1, 2], 0.1)


# --- resuming with the defaults typed out ----------------------------------------------------

def _saved_search_checkpoint(tmp_path: Path, cfg) -> Path:
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(checkpoint_bytes(hbacli.search.CHECKPOINT_FORMAT,
                                      hbacli.search.CHECKPOINT_VERSION,
                                      cfg.model_dump(mode="json"), device_type="cpu"))
    return path


SAME_SEARCH_SIZES = [
    # (dataset, sizes of the first run, sizes typed on the resume): the same effective sizes
    ("digits", {}, dict(train_size=1000, val_size=400)),
    ("digits", dict(train_size=1000, val_size=400), {}),
    ("digits", {}, dict(val_size=400)),
    ("reduced-cifar10", {}, dict(train_size=4000, val_size=10000)),
    ("reduced-imagenet", dict(train_size=6000), {}),
    ("cifar10", {}, dict(val_size=10000)),
]


@pytest.mark.parametrize("dataset, first, again", SAME_SEARCH_SIZES)
def test_search_resume_accepts_the_default_sizes_typed_out(tmp_path, dataset, first, again):
    path = _saved_search_checkpoint(tmp_path, resolve_search_config(dataset, None, **first))
    resumed = resolve_search_config(dataset, None, **again)
    hbacli.search.read_search_checkpoint(path, resumed, torch.device("cpu"))   # no error


def test_search_resume_still_refuses_other_sizes(tmp_path):
    path = _saved_search_checkpoint(tmp_path, resolve_search_config("digits", None))
    with pytest.raises(HbaError, match=r"train_size: 1000 → 999"):
        hbacli.search.read_search_checkpoint(
            path, resolve_search_config("digits", None, train_size=999), torch.device("cpu"))


SAME_EVALUATE_SIZES = [
    ("digits", {}, dict(train_size=1000)),
    ("digits", {}, dict(val_size=0)),           # evaluate holds nothing out of a full dataset
    ("cifar10", dict(val_size=0), {}),
    ("reduced-cifar10", {}, dict(train_size=4000, val_size=10000)),
]


@pytest.mark.parametrize("dataset, first, again", SAME_EVALUATE_SIZES)
def test_evaluate_resume_accepts_the_default_sizes_typed_out(tmp_path, dataset, first, again):
    """Through checkpoint.read_checkpoint, which evaluate's seed checkpoints are read with."""
    fmt, version = hbacli.evaluate.CHECKPOINT_FORMAT, hbacli.evaluate.CHECKPOINT_VERSION
    saved = resolve_evaluate_config("none", dataset, None, **first)
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(checkpoint_bytes(fmt, version, saved.model_dump(mode="json")))
    resumed = resolve_evaluate_config("none", dataset, None, **again).model_dump(mode="json")
    read_checkpoint(path, fmt, version, resumed, hbacli.evaluate.RESUME_IGNORED_FIELDS,
                    "evaluate")   # no error


def test_evaluate_resume_still_refuses_a_held_out_set_it_did_not_have():
    saved = resolve_evaluate_config("none", "digits", None).model_dump(mode="json")
    requested = resolve_evaluate_config("none", "digits", None,
                                        val_size=400).model_dump(mode="json")
    assert config_differences(saved, requested, hbacli.evaluate.RESUME_IGNORED_FIELDS) == \
        ["val_size: 0 → 400"]
