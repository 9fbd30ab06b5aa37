"""`--precision auto|bf16|fp16|fp32` (issue 16): how it resolves per device, that the flag
reaches the config, that runs record what it resolved to, that fp32 computes as before, and that
fp16's gradient scalers are checkpointed so a resume stays exact. CPU only: CUDA is faked where
the resolution needs a GPU; fp16 runs on the CPU only when a test forces it past the resolver
(torch's CPU autocast does run fp16, and ``torch.amp.GradScaler("cpu")`` works)."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import hbacli.evaluate
import hbacli.search
import hbacli.search_engine
import hbacli.trainer
from hbacli.cli import app
from hbacli.datasets import load_dataset
from hbacli.errors import HbaError
from hbacli.evaluate import run_evaluation, seed_checkpoint_path
from hbacli.presets import resolve_evaluate_config, resolve_search_config
from hbacli.runtime import Precision, resolve_precision
from hbacli.search import run_search
from hbacli.search_engine import SearchEngine

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CPU, CUDA = torch.device("cpu"), torch.device("cuda")
# Smaller than test_search's TINY: one round (2 SGD steps, 1 λ step) per epoch.
SEARCH = dict(model="wrn16_1", train_size=64, val_size=32, batch_size=32, epochs=2,
              device="cpu")
EVALUATE = dict(train_size=64, batch_size=32, epochs=2, device="cpu")


def search_config(**overrides):
    return resolve_search_config("digits", None, **{**SEARCH, **overrides})


def evaluate_config(policy="cutout", **overrides):
    return resolve_evaluate_config(policy, "digits", "wrn16_1", **{**EVALUATE, **overrides})


def search(tmp_path, name, cfg, **kwargs):
    return run_search(cfg, out=tmp_path / f"{name}.json", run_dir=tmp_path / name,
                      progress=False, **kwargs)


def evaluate(tmp_path, name, cfg, **kwargs):
    return run_evaluation(cfg, out=tmp_path / f"{name}.json", run_dir=tmp_path / name,
                          progress=False, **kwargs)


@pytest.fixture
def fake_gpu(monkeypatch):
    """torch.cuda answering as a GPU of the given compute capability would."""

    def install(capability, bf16_supported=True):
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16_supported)
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Fake GPU")

    return install


class ScaledFp32(Precision):
    """fp16's enabled GradScaler with fp32 forward passes: the evaluation test's scaler wiring
    without CPU fp16's cost (its test-set passes in fp16 take ~40 s on 2 busy cores)."""

    def autocast(self):
        return contextlib.nullcontext()


@pytest.fixture
def fp16_on_cpu(monkeypatch):
    """Let search (CPU fp16 autocast, enabled CPU GradScalers) and evaluate (``ScaledFp32``)
    run "fp16" on the CPU, which the resolver refuses to users: the scalers' code paths and
    checkpoints, tested here."""

    def forced(kind):
        def resolve(name, device):
            return kind("fp16", device.type) if name in ("auto", "fp16") else \
                resolve_precision(name, device)
        return resolve

    for module in (hbacli.search, hbacli.search_engine):   # the config's, the engine's
        monkeypatch.setattr(module, "resolve_precision", forced(Precision))
    for module in (hbacli.evaluate, hbacli.trainer):       # the config's, the trainer's
        monkeypatch.setattr(module, "resolve_precision", forced(ScaledFp32))


# ---- resolution ------------------------------------------------------------------------------

@pytest.mark.parametrize("requested, expected", [
    ("auto", "fp32"), ("fp32", "fp32"), ("bf16", "bf16"),
])
def test_on_the_cpu_auto_is_fp32_and_bf16_is_allowed(requested, expected):
    precision = resolve_precision(requested, CPU)
    assert precision == Precision(expected, "cpu") and not precision.uses_grad_scaler


@pytest.mark.parametrize("capability, requested, expected", [
    ((7, 0), "auto", "fp16"),    # V100: bf16 only emulated
    ((7, 5), "auto", "fp16"),    # T4
    ((8, 0), "auto", "bf16"),    # A100
    ((8, 6), "auto", "bf16"),
    ((9, 0), "auto", "bf16"),    # H100/H200
    ((9, 0), "fp16", "fp16"),
    ((9, 0), "fp32", "fp32"),
    ((7, 0), "bf16", "bf16"),    # asked for: emulated, but runs
])
def test_on_cuda_auto_picks_bf16_only_with_native_bf16(fake_gpu, capability, requested,
                                                       expected):
    fake_gpu(capability)
    precision = resolve_precision(requested, CUDA)
    assert precision == Precision(expected, "cuda")
    assert precision.uses_grad_scaler == (expected == "fp16")
    assert precision.dtype == {"bf16": torch.bfloat16, "fp16": torch.float16,
                               "fp32": torch.float32}[expected]
    assert resolve_precision(precision.name, CUDA) == precision   # resolving is idempotent


def test_bf16_on_a_gpu_without_any_bf16_is_refused(fake_gpu):
    fake_gpu((6, 1), bf16_supported=False)
    with pytest.raises(HbaError, match="Fake GPU cannot compute in bfloat16"):
        resolve_precision("bf16", CUDA)
    assert resolve_precision("auto", CUDA).name == "fp16"


@pytest.mark.parametrize("device, requested, message", [
    (CPU, "fp16", "--precision fp16 is for CUDA GPUs"),
    (torch.device("mps"), "fp16", "--precision fp16 is for CUDA GPUs"),
    (torch.device("mps"), "bf16", "not on mps"),
    (CPU, "fp8", "unknown precision 'fp8'"),
])
def test_what_cannot_run_is_refused_on_one_line(device, requested, message):
    with pytest.raises(HbaError, match=message) as error:
        resolve_precision(requested, device)
    assert "\n" not in str(error.value)


def test_the_scaler_is_enabled_for_fp16_only_and_fp32_autocasts_nothing():
    assert Precision("fp16", "cpu").grad_scaler().is_enabled()
    assert not Precision("bf16", "cpu").grad_scaler().is_enabled()
    assert not Precision("fp32", "cpu").grad_scaler().is_enabled()
    assert isinstance(Precision("fp32", "cpu").autocast(), contextlib.nullcontext)
    a = torch.randn(4, 4)
    with Precision("bf16", "cpu").autocast():
        assert (a @ a).dtype == torch.bfloat16
    with Precision("fp32", "cpu").autocast():
        assert (a @ a).dtype == torch.float32


def test_precision_is_not_a_setting_a_resume_may_change():
    assert "precision" not in hbacli.search.RESUME_IGNORED_FIELDS
    assert "precision" not in hbacli.evaluate.RESUME_IGNORED_FIELDS


# ---- the command line ------------------------------------------------------------------------

def _captured(monkeypatch, module, function):
    seen = {}
    monkeypatch.setattr(module, function, lambda cfg, **kwargs: seen.setdefault("cfg", cfg))
    return seen


@pytest.mark.parametrize("value", ["auto", "bf16", "fp16", "fp32"])
def test_the_flag_reaches_both_configs(tmp_path, monkeypatch, value):
    monkeypatch.chdir(tmp_path)
    seen = _captured(monkeypatch, hbacli.search, "run_search")
    result = CliRunner().invoke(app, ["search", "--precision", value])
    assert result.exit_code == 0, result.output
    assert seen["cfg"].precision == value
    seen = _captured(monkeypatch, hbacli.evaluate, "run_evaluation")
    result = CliRunner().invoke(app, ["evaluate", "cutout", "--precision", value])
    assert result.exit_code == 0, result.output
    assert seen["cfg"].precision == value


def test_the_default_is_auto_and_a_config_file_may_set_it(tmp_path):
    assert search_config().precision == "auto" and evaluate_config().precision == "auto"
    (tmp_path / "c.yaml").write_text("precision: bf16\n")
    assert resolve_search_config("digits", tmp_path / "c.yaml").precision == "bf16"


def _one_line_error(result, *fragments):
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert all(fragment in lines[0] for fragment in fragments), lines[0]


@pytest.mark.parametrize("command", [["search"], ["evaluate", "cutout"]])
def test_a_bad_value_is_one_line_and_exit_2(tmp_path, monkeypatch, command):
    monkeypatch.chdir(tmp_path)
    _one_line_error(CliRunner().invoke(app, [*command, "--precision", "fp8"]),
                    "precision", "'auto', 'bf16', 'fp16' or 'fp32'")
    # fp16 on the CPU: refused before any data are read or files written
    _one_line_error(CliRunner().invoke(app, [*command, "--precision", "fp16", "--device", "cpu",
                                             "--epochs", "1"]),
                    "--precision fp16 is for CUDA GPUs")
    assert not list(tmp_path.glob("runs/*/*"))


# ---- runs record the resolved precision; fp32 is what it was ---------------------------------

@pytest.fixture(scope="module")
def default_search(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("default")
    return tmp, search(tmp, "run", search_config())


def test_a_bf16_search_on_the_cpu_runs_and_records_bf16(tmp_path, default_search):
    schedule = search(tmp_path, "run", search_config(precision="bf16"))
    assert schedule.provenance.config["precision"] == "bf16"
    assert json.loads((tmp_path / "run" / "config.json").read_text())["precision"] == "bf16"
    checkpoint = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert checkpoint["config"]["precision"] == "bf16"
    assert checkpoint["engine"]["grad_scalers"] == {"sgd": {}, "adam": {}}   # no scaler
    probabilities = np.array([op.probability for op in schedule.ops])
    assert np.isfinite(probabilities).all()
    # λ moved, and bf16 computed something other than fp32 did
    assert not np.array_equal(probabilities[:, 0], probabilities[:, -1])
    reference = default_search[1]
    assert not np.array_equal(probabilities,
                              np.array([op.probability for op in reference.ops]))
    # the precision changes the computation: a resume must repeat it
    with pytest.raises(HbaError, match="precision: 'bf16' → 'fp32'"):
        search(tmp_path, "run", search_config(epochs=3), resume=True)


def test_fp32_is_the_cpu_default_and_computes_as_before(tmp_path, default_search):
    """Default (auto → fp32 on the CPU) and explicit fp32 give one schedule, recorded as fp32."""
    reference = default_search[1]
    assert reference.provenance.config["precision"] == "fp32"
    explicit = search(tmp_path, "run", search_config(precision="fp32"))
    assert explicit.provenance.config["precision"] == "fp32"
    assert [op.model_dump() for op in explicit.ops] == [op.model_dump() for op in reference.ops]


def _todays_train_step(engine, images, labels):
    """SearchEngine.train_step as it was before --precision (fp32 on the CPU: no autocast,
    no scaler), with the same random draws."""
    from hbacli import space
    from hbacli.policy import augment_batch
    from hbacli.space_kernels import policy_split, to_physical

    noise = torch.randn(images.shape[0], space.NUM_HYPERPARAMETERS, generator=engine.generator)
    lam_i = engine.lam.detach() + engine.cfg.sigma * noise
    probabilities, magnitudes = policy_split(to_physical(engine.space, lam_i))
    x = augment_batch(images, probabilities, magnitudes, generator=engine.generator,
                      kernels=engine.kernels.policy_kernels)
    x = engine.pipeline.train(x, generator=engine.generator)
    engine.hypernet.train()
    loss = torch.nn.functional.cross_entropy(engine.hypernet(x, engine.hyper_input(lam_i)),
                                             labels)
    engine.sgd.zero_grad(set_to_none=True)
    loss.backward()
    engine.sgd.step()
    engine.lr_scheduler.step()


def _todays_hyper_step(engine, images, labels):
    x = engine.pipeline.eval(images)
    engine.hypernet.train(engine.cfg.val_bn_mode == "train")
    with engine._phi_frozen():
        loss = torch.nn.functional.cross_entropy(
            engine.hypernet(x, engine.hyper_input(engine.lam)), labels)
        engine.adam.zero_grad(set_to_none=True)
        loss.backward(inputs=[engine.lam])
        engine.adam.step()
    engine.hypernet.train()


def test_fp32_steps_are_bit_identical_to_the_steps_before_precision():
    cfg = search_config(precision="fp32")
    splits = load_dataset(cfg.dataset, cfg.data_dir, cfg.train_size, cfg.val_size,
                          cfg.split_seed)
    engines = []
    for _ in range(2):
        torch.manual_seed(0)
        engines.append(SearchEngine(cfg, splits, CPU))
    now, before = engines
    batches = list(now.train_loader)[:2]
    val = next(iter(now.val_loader))
    for images, labels in batches:
        now.train_step(images, labels)
        _todays_train_step(before, images, labels)
    now.hyper_step(*val)
    _todays_hyper_step(before, *val)
    assert torch.equal(now.lam, before.lam)
    assert all(torch.equal(a, b) for a, b in zip(now.hypernet.state_dict().values(),
                                                 before.hypernet.state_dict().values()))


def test_a_bf16_evaluation_runs_and_records_bf16_and_fp32_is_the_default(tmp_path):
    default = evaluate(tmp_path, "default", evaluate_config(epochs=1))
    fp32 = evaluate(tmp_path, "fp32", evaluate_config(epochs=1, precision="fp32"))
    bf16 = evaluate(tmp_path, "bf16", evaluate_config(epochs=1, precision="bf16"))
    assert default.config["precision"] == fp32.config["precision"] == "fp32"
    assert bf16.config["precision"] == "bf16"
    assert json.loads((tmp_path / "bf16" / "config.json").read_text())["precision"] == "bf16"
    assert fp32.per_seed[0].train_loss == default.per_seed[0].train_loss
    assert fp32.per_seed[0].test_loss == default.per_seed[0].test_loss
    assert np.isfinite(bf16.per_seed[0].test_loss)
    assert bf16.per_seed[0].train_loss != default.per_seed[0].train_loss


# ---- fp16: the gradient scalers are checkpointed ---------------------------------------------

def _round_trip(state):
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def test_search_scalers_round_trip_through_a_checkpoint_and_resume_exactly(fp16_on_cpu):
    """Both steps run through their own enabled scaler; a fresh engine loaded from the state
    dict has the same scales and growth trackers and continues bit-identically."""
    cfg = search_config()
    splits = load_dataset(cfg.dataset, cfg.data_dir, cfg.train_size, cfg.val_size,
                          cfg.split_seed)
    torch.manual_seed(0)
    engine = SearchEngine(cfg, splits, CPU)
    assert engine.precision.name == "fp16"
    assert engine.sgd_scaler.is_enabled() and engine.adam_scaler.is_enabled()
    assert engine.sgd_scaler is not engine.adam_scaler
    engine.run_epoch(0)
    state = _round_trip(engine.state_dict())
    sgd_state, adam_state = state["grad_scalers"]["sgd"], state["grad_scalers"]["adam"]
    assert sgd_state["_growth_tracker"] + (sgd_state["scale"] < 2.0**16) > 0   # it moved
    assert adam_state["_growth_tracker"] + (adam_state["scale"] < 2.0**16) > 0
    resumed = SearchEngine(cfg, splits, CPU)
    resumed.load_state_dict(state)
    assert resumed.sgd_scaler.state_dict() == engine.sgd_scaler.state_dict()
    assert resumed.adam_scaler.state_dict() == engine.adam_scaler.state_dict()
    engine.run_epoch(1)
    resumed.run_epoch(1)
    assert torch.equal(resumed.lam, engine.lam)
    assert resumed.sgd_scaler.state_dict() == engine.sgd_scaler.state_dict()
    assert resumed.adam_scaler.state_dict() == engine.adam_scaler.state_dict()


class Interrupt(Exception):
    pass


def _stop_after_first_epoch(record):
    if record.epoch == 1:
        raise Interrupt


@pytest.mark.slow
def test_an_interrupted_fp16_search_resumes_exactly(tmp_path, fp16_on_cpu):
    whole = search(tmp_path, "whole", search_config())
    assert whole.provenance.config["precision"] == "fp16"
    with pytest.raises(Interrupt):
        search(tmp_path, "run", search_config(), on_epoch_end=_stop_after_first_epoch)
    saved = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert set(saved["engine"]["grad_scalers"]["sgd"]) >= {"scale", "_growth_tracker"}
    resumed = search(tmp_path, "run", search_config(), resume=True)
    assert [op.model_dump() for op in resumed.ops] == [op.model_dump() for op in whole.ops]


def test_an_interrupted_fp16_evaluation_resumes_exactly(tmp_path, fp16_on_cpu):
    whole = evaluate(tmp_path, "whole", evaluate_config())
    assert whole.config["precision"] == "fp16"
    with pytest.raises(Interrupt):
        evaluate(tmp_path, "run", evaluate_config(), on_epoch_end=_stop_after_first_epoch)
    saved = torch.load(seed_checkpoint_path(tmp_path / "run", 0), weights_only=True)
    assert set(saved["grad_scaler"]) >= {"scale", "_growth_tracker"}
    resumed = evaluate(tmp_path, "run", evaluate_config(), resume=True)
    got, want = resumed.per_seed[0], whole.per_seed[0]
    assert (got.train_loss, got.test_loss) == (want.train_loss, want.test_loss)
    final = lambda name: torch.load(seed_checkpoint_path(tmp_path / name, 0),  # noqa: E731
                                    weights_only=True)
    assert final("run")["grad_scaler"] == final("whole")["grad_scaler"]
    assert all(torch.equal(final("run")["model"][k], v)
               for k, v in final("whole")["model"].items())
