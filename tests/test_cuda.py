"""CUDA checks, skipped on machines without a GPU (CI has none; ``benchmarks/gpu_checks.sh``
runs them on a lent one): the batched policy and the baseline pipeline give the CPU's pixels
and never synchronise with the host; the search and evaluation steps run with bf16 autocast and
channels_last, without host synchronisation; a short search and evaluation run end to end;
``--precision auto`` follows the GPU, and fp16 runs with a gradient scaler per optimiser."""

from __future__ import annotations

import math
from contextlib import contextmanager

import pytest
import torch

from hbacli import policy
from hbacli.datasets import load_dataset
from hbacli.evaluate import run_evaluation
from hbacli.pipeline import BaselinePipeline
from hbacli.presets import resolve_evaluate_config, resolve_search_config
from hbacli.search import run_search
from hbacli.search_engine import SearchEngine

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
CUDA = torch.device("cuda")


@contextmanager
def no_host_sync():
    """Any synchronising CUDA call inside the block raises (torch's sync debug mode)."""
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_policy_on_cuda_gives_the_cpu_pixels_without_host_sync(cifar_slice, random_policy):
    x = torch.from_numpy(cifar_slice["train_images"][:128]).contiguous()
    p, m, u = random_policy(len(x), seed=0)
    on_cpu = policy.augment_from_uniform(x, p, m, u)
    args = [t.to(CUDA) for t in (x, p, m, u)]
    policy.augment_from_uniform(*args)  # first call: lookup tables made on the device
    compiled = policy.augment_from_uniform(*args, kernels="compiled")  # compiles
    with no_host_sync():  # compute only: every read back to the host comes after the block
        on_gpu = policy.augment_from_uniform(*args)
        generator = torch.Generator(device=CUDA).manual_seed(0)
        seeded = policy.augment_batch(args[0], args[1], args[2], generator)
        compiled_again = policy.augment_from_uniform(*args, kernels="compiled")
    assert torch.equal(compiled_again, compiled)  # torch.equal reads a value back: outside
    assert on_gpu.device.type == "cuda" and seeded.shape == args[0].shape
    assert (compiled != on_gpu).flatten(1).any(1).float().mean() <= 0.02
    # CUDA may fuse a multiply-add where the CPU rounds twice: allow rare one-level differences
    diff = (on_gpu.cpu().short() - on_cpu.short()).abs()
    assert (diff > 0).flatten(1).any(1).float().mean() <= 0.02, "images differing"
    assert diff.float().mean() <= 0.01


def test_baseline_pipeline_runs_on_cuda_without_host_sync(cifar_slice):
    x = torch.from_numpy(cifar_slice["train_images"][:128]).to(CUDA)
    pipeline = BaselinePipeline("cifar", (125.3, 123.0, 113.9), (63.0, 62.1, 66.7), cutout=True)
    generator = torch.Generator(device=CUDA).manual_seed(0)
    pipeline.train(x, generator=generator), pipeline.eval(x)  # warm-up
    with no_host_sync():
        out = pipeline.train(x, generator=generator)
        plain = pipeline.eval(x)
    assert out.shape == plain.shape == (128, 3, 32, 32) and out.is_floating_point()


def test_search_steps_use_bf16_and_channels_last_without_host_sync():
    # bf16 asked for: auto would pick fp16 (whose GradScaler syncs) below compute capability 8.0
    cfg = resolve_search_config("digits", None, device="cuda", batch_size=64, precision="bf16")
    splits = load_dataset(cfg.dataset, cfg.data_dir, cfg.train_size, cfg.val_size,
                          cfg.split_seed)
    engine = SearchEngine(cfg, splits, CUDA)
    train, val = list(engine.train_loader)[:4], list(engine.val_loader)[:2]
    engine.train_step(*train[0])
    engine.hyper_step(*val[0])
    dtypes = []
    conv = next(m for m in engine.hypernet.modules() if isinstance(m, torch.nn.Conv2d))
    conv.register_forward_hook(lambda module, args, out: dtypes.append(out.dtype))
    lam_before = engine.lam.detach().clone()
    with no_host_sync():
        for images, labels in train[1:3]:
            engine.train_step(images, labels)
        engine.hyper_step(*val[1])
    assert dtypes and set(dtypes) == {torch.bfloat16}
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert not torch.equal(engine.lam.detach(), lam_before)  # the λ step moved λ


def test_a_short_search_and_evaluation_run_end_to_end(tmp_path):
    cfg = resolve_search_config("digits", None, device="cuda", epochs=2)
    schedule = run_search(cfg, out=tmp_path / "s.json", run_dir=tmp_path / "search",
                          progress=False)
    assert schedule.provenance.device.startswith("cuda")
    eval_cfg = resolve_evaluate_config(str(tmp_path / "s.json"), "digits", "wrn16_1",
                                       epochs=2, device="cuda")
    results = run_evaluation(eval_cfg, out=tmp_path / "r.json", run_dir=tmp_path / "eval",
                             progress=False)
    assert math.isfinite(results.per_seed[0].test_loss)


def test_auto_precision_follows_the_gpu_and_runs_record_it(tmp_path):
    from hbacli.runtime import resolve_precision

    native = torch.cuda.get_device_capability(CUDA) >= (8, 0)
    assert resolve_precision("auto", CUDA).name == ("bf16" if native else "fp16")
    cfg = resolve_search_config("digits", None, device="cuda", epochs=1, train_size=512,
                                val_size=256)
    schedule = run_search(cfg, out=tmp_path / "s.json", run_dir=tmp_path / "search",
                          progress=False)
    assert schedule.provenance.config["precision"] == ("bf16" if native else "fp16")


def test_fp16_steps_scale_both_optimisers_and_runs_record_fp16(tmp_path):
    """--precision fp16 (auto's choice below compute capability 8.0): fp16 forward passes, a
    GradScaler for φ's SGD and one for λ's Adam, their state in the checkpoint, and short
    search and evaluation runs that record fp16."""
    cfg = resolve_search_config("digits", None, device="cuda", batch_size=64, precision="fp16")
    splits = load_dataset(cfg.dataset, cfg.data_dir, cfg.train_size, cfg.val_size,
                          cfg.split_seed)
    engine = SearchEngine(cfg, splits, CUDA)
    dtypes = []
    conv = next(m for m in engine.hypernet.modules() if isinstance(m, torch.nn.Conv2d))
    conv.register_forward_hook(lambda module, args, out: dtypes.append(out.dtype))
    lam_before = engine.lam.detach().clone()
    for images, labels in list(engine.train_loader)[:4]:
        engine.train_step(images, labels)
    for images, labels in list(engine.val_loader)[:6]:
        engine.hyper_step(images, labels)
    assert dtypes and set(dtypes) == {torch.float16}
    assert engine.sgd_scaler.is_enabled() and engine.adam_scaler.is_enabled()
    scalers = engine.state_dict()["grad_scalers"]
    assert scalers["sgd"]["scale"] > 0 and scalers["adam"]["scale"] > 0
    assert bool(torch.isfinite(engine.lam).all())
    assert not torch.equal(engine.lam.detach(), lam_before)  # some λ step was not skipped

    cfg = resolve_search_config("digits", None, device="cuda", epochs=2, train_size=512,
                                val_size=256, precision="fp16")
    schedule = run_search(cfg, out=tmp_path / "s.json", run_dir=tmp_path / "search",
                          progress=False)
    assert schedule.provenance.config["precision"] == "fp16"
    saved = torch.load(tmp_path / "search" / "checkpoint.pt", weights_only=True)
    assert set(saved["engine"]["grad_scalers"]["adam"]) >= {"scale", "_growth_tracker"}
    eval_cfg = resolve_evaluate_config("cutout", "digits", "wrn16_1", epochs=2, device="cuda",
                                       precision="fp16")
    results = run_evaluation(eval_cfg, out=tmp_path / "r.json", run_dir=tmp_path / "eval",
                             progress=False)
    assert results.config["precision"] == "fp16"
    assert math.isfinite(results.per_seed[0].test_loss)
