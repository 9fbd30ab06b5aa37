"""HBA search versus a plain training of the same network: time and ratio (the paper: 1.6×).

In one process, on the same data and device, for the same number of SGD steps:

1. plain training: the network without hyper-layers, no λ step, no policy — only the baseline
   pipeline (standardise, flip/crop, Cutout), SGD with the search's settings;
2. the HBA search itself, through ``run_search`` (checkpoints and all, progress off).

Both run under the commands' CPU thread rule (``hbacli.runtime.use_cpu_threads``).

The ratio compares the step loops (search epochs' wall time / plain training's); the search's
end-to-end time (data loading, model building, files) is reported beside it. With --compile
both networks are compiled (``hbacli.runtime.compile_network``) and the first epoch of each,
which pays the compilation, is also left out of a second, steady-state ratio. The last line
of output is one JSON object with every figure.

    python benchmarks/search.py --dataset digits --device cpu
    python benchmarks/search.py --dataset reduced-cifar10 --device cuda [--compile]
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from hbacli.datasets import load_dataset
from hbacli.errors import HbaError
from hbacli.loaders import DeviceLoader
from hbacli.nets import build_model
from hbacli.pipeline import BaselinePipeline
from hbacli.presets import SearchConfig, lr_factor, resolve_search_config
from hbacli.runtime import (
    autocast,
    compile_network,
    device_description,
    memory_format,
    resolve_device,
    seed_everything,
    use_cpu_threads,
)
from hbacli.search import LOG_NAME, run_search
from hbacli.search_engine import rounds_per_epoch

WARMUP_STEPS = 3  # untimed: first-call allocations and kernel selection


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def plain_training(cfg: SearchConfig, splits, device: torch.device) -> dict[str, float]:
    """Train the plain network for exactly the search's number of SGD steps; time the loop."""
    seed_everything(cfg.seed)
    fmt = memory_format(device)
    loader = DeviceLoader(splits.train_images, splits.train_labels, cfg.batch_size, device,
                          shuffle=True, drop_last=True, seed=cfg.seed)
    val_batches = len(splits.val_labels) // cfg.batch_size
    steps_per_epoch = rounds_per_epoch(len(loader), val_batches, cfg) * cfg.train_steps
    pipeline = BaselinePipeline(splits.family, splits.mean, splits.std, cutout=True)
    model = build_model(cfg.model, splits.num_classes).to(device=device, memory_format=fmt)
    if cfg.compile:
        compile_network(model, device)
    sgd = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                          nesterov=cfg.nesterov and cfg.momentum > 0,
                          weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        sgd, lambda step: lr_factor(step, cfg, steps_per_epoch))
    generator = torch.Generator(device=device)
    generator.manual_seed(cfg.seed)
    model.train()

    def step(images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        x = pipeline.train(images, generator=generator).contiguous(memory_format=fmt)
        with autocast(device):
            loss = F.cross_entropy(model(x), labels)
        sgd.zero_grad(set_to_none=True)
        loss.backward()
        sgd.step()
        scheduler.step()
        return loss.detach()

    loader.set_epoch(-1)
    for _, (images, labels) in zip(range(WARMUP_STEPS), loader):
        step(images, labels)
    synchronize(device)

    epoch_seconds = []
    for epoch in range(cfg.epochs):
        started = time.perf_counter()
        loader.set_epoch(epoch)
        loss_sum = torch.zeros((), device=device)
        for _, (images, labels) in zip(range(steps_per_epoch), loader):
            loss_sum += step(images, labels)
        mean_loss = float(loss_sum) / steps_per_epoch  # one read per epoch, as the search does
        epoch_seconds.append(time.perf_counter() - started)
    seconds = sum(epoch_seconds)
    steps = steps_per_epoch * cfg.epochs
    return {"plain_seconds": seconds, "plain_steps": steps,
            "plain_images_per_second": steps * cfg.batch_size / seconds,
            "plain_final_train_loss": mean_loss, "plain_epoch_seconds": epoch_seconds}


def hba_search(cfg: SearchConfig) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="hba-bench-") as tmp:
        started = time.perf_counter()
        schedule = run_search(cfg, out=Path(tmp) / "schedule.json", run_dir=Path(tmp) / "run",
                              progress=False)
        total = time.perf_counter() - started
        with open(Path(tmp) / "run" / LOG_NAME, newline="") as f:
            rows = list(csv.DictReader(f))
    loop = sum(float(r["epoch_seconds"]) for r in rows)
    images = sum(float(r["epoch_seconds"]) * float(r["images_per_second"]) for r in rows)
    return {"search_seconds_end_to_end": total, "search_loop_seconds": loop,
            "search_epoch_seconds": [float(r["epoch_seconds"]) for r in rows],
            "search_images_per_second": images / loop,
            "search_final_train_loss": float(rows[-1]["train_loss"]),
            "search_final_val_accuracy": float(rows[-1]["val_accuracy"]),
            "search_provenance_seconds": schedule.provenance.search_seconds}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--model", default=None, help="default: the dataset's preset")
    parser.add_argument("--epochs", type=int, default=None, help="default: the preset's")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--strategy", default=None, help="default: the preset's (1st-bn)")
    parser.add_argument("--compile", action="store_true", help="torch.compile both networks")
    args = parser.parse_args(argv)

    cfg = resolve_search_config(args.dataset, None, model=args.model, epochs=args.epochs,
                                device=args.device, strategy=args.strategy, compile=args.compile)
    device = resolve_device(cfg.device)
    splits = load_dataset(cfg.dataset, cfg.data_dir, cfg.train_size, cfg.val_size,
                          cfg.split_seed)
    use_cpu_threads(cfg.device)  # the commands' CPU thread rule, for a like-for-like loop
    plain = plain_training(cfg, splits, device)
    device_text = device_description(device)
    print(f"plain training : {plain['plain_seconds']:8.1f} s  "
          f"({plain['plain_images_per_second']:,.0f} img/s, {plain['plain_steps']} steps)")
    search = hba_search(cfg)
    ratio = search["search_loop_seconds"] / plain["plain_seconds"]
    print(f"HBA search     : {search['search_loop_seconds']:8.1f} s  "
          f"({search['search_images_per_second']:,.0f} img/s; end to end "
          f"{search['search_seconds_end_to_end']:.1f} s)")
    print(f"ratio search / plain: {ratio:.2f}×  (paper: 1.6× on a V100)")
    steady = None
    if cfg.compile and cfg.epochs > 1:
        steady = sum(search["search_epoch_seconds"][1:]) / sum(plain["plain_epoch_seconds"][1:])
        print(f"ratio after the first (compiling) epoch: {steady:.2f}×")
    figures = {"dataset": cfg.dataset, "model": cfg.model, "strategy": cfg.strategy,
               "epochs": cfg.epochs, "batch_size": cfg.batch_size,
               "train_size": int(splits.train_labels.shape[0]),
               "val_size": int(splits.val_labels.shape[0]),
               "device": device_text, "torch": torch.__version__,
               "python": platform.python_version(), "compile": cfg.compile, **plain, **search,
               "ratio": ratio, "ratio_after_first_epoch": steady}
    print(json.dumps(figures))


if __name__ == "__main__":
    try:
        main()
    except HbaError as error:  # bad input: one line, no traceback
        sys.exit(f"error: {error}")
