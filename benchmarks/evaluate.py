"""Images/s of an `hba evaluate` run: the schedule replayed batched on the device versus the
same run with the per-image torchvision-style pipeline (DataLoader workers + ScheduleTransform).

Three full evaluation runs through ``run_evaluation`` (same config, seed, data, device):

1. ``batched``: ``ScheduleAugmenter`` on device-resident uint8 batches (the default);
2. ``per-image``: DataLoader workers apply ``ScheduleTransform`` to each image, batches move to
   the device (``--workers`` per process);
3. ``no-policy``: the ``cutout`` baseline — training alone, the ceiling for both.

Training images/s is the median over epochs after the first (the first pays for allocation
and kernel selection). The three runs are repeated ``--repeats`` times in turn and each figure
is the best repeat's, so that a shared machine's load spikes hit all three alike. Next to the
runs, the policy alone: the epoch's batches produced without training (augmentation images/s).
The last line of output is one JSON object with every figure.

    python benchmarks/evaluate.py --device cpu --threads 1
    python benchmarks/evaluate.py --dataset reduced-cifar10 --model wrn40_2 --epochs 3 --device cuda
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from hbacli.batches import DeviceBatches, PerImageBatches, default_workers
from hbacli.distributed import Ranks
from hbacli.errors import HbaError
from hbacli.evaluate import run_evaluation
from hbacli.presets import resolve_evaluate_config
from hbacli.replay import ScheduleAugmenter, ScheduleTransform
from hbacli.runtime import device_description, resolve_device
from hbacli.schedule import load_schedule
from hbacli.trainer import load_training_data

EXAMPLE_SCHEDULE = Path(__file__).resolve().parents[1] / "examples" / "example-schedule.json"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def training_run(cfg, replay: str, workers: int, tmp: Path) -> dict[str, float]:
    """One full evaluation run; its per-epoch and end-to-end speed."""
    per_epoch: list[float] = []
    started = time.perf_counter()
    results = run_evaluation(cfg, out=tmp / f"{replay}.json", run_dir=tmp / replay,
                             progress=False, replay=replay, workers=workers,
                             on_epoch_end=lambda r: per_epoch.append(r.images_per_second))
    wall = time.perf_counter() - started
    steady = per_epoch[1:] or per_epoch
    return {"train_images_per_second": statistics.median(steady),
            "first_epoch_images_per_second": per_epoch[0],
            "wall_seconds": wall, "test_error": results.per_seed[0].test_error}


def policy_only(batches, device: torch.device, epochs: int) -> float:
    """Images/s of producing augmented batches on the device, nothing else (best epoch)."""
    rates = []
    for epoch in range(epochs):
        batches.set_epoch(epoch)
        synchronize(device)
        started, count = time.perf_counter(), 0
        for images, _ in batches:
            count += images.shape[0]
        synchronize(device)
        rates.append(count / (time.perf_counter() - started))
    return max(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schedule", type=Path, default=EXAMPLE_SCHEDULE)
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--model", default="wrn16_1")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--train-size", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=None,
                        help="DataLoader workers of the per-image run (default: cores - 1, ≤ 8)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads of the training process (default: torch's choice); "
                        "1 is steadier on a machine shared with other jobs")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    workers = default_workers(Ranks()) if args.workers is None else args.workers
    common = dict(epochs=args.epochs, train_size=args.train_size, batch_size=args.batch_size,
                  seeds=[0], device=device.type)
    cfg = resolve_evaluate_config(str(args.schedule), args.dataset, args.model, **common)
    no_policy = resolve_evaluate_config("cutout", args.dataset, args.model, **common)

    data = load_training_data(cfg)
    schedule = load_schedule(args.schedule)
    augmenter = ScheduleAugmenter(schedule, cfg.epochs, device, seed=0)
    batched = DeviceBatches(data.train_images, data.train_labels, cfg.batch_size, device, 0,
                            Ranks(), augmenter)
    per_image = PerImageBatches(data.train_images, data.train_labels,
                                ScheduleTransform(schedule, cfg.epochs, seed=0),
                                cfg.batch_size, device, 0, Ranks(), workers)
    epochs = cfg.epochs * args.repeats
    figures = {"policy_only_batched_images_per_second": policy_only(batched, device, epochs),
               "policy_only_per_image_images_per_second": policy_only(per_image, device, epochs)}

    runs: dict[str, list[dict[str, float]]] = {"batched": [], "per_image": [], "no_policy": []}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for name, run_cfg, replay in (("batched", cfg, "batched"),
                                          ("per_image", cfg, "per-image"),
                                          ("no_policy", no_policy, "batched")):
                run = training_run(run_cfg, replay, workers, Path(tmp) / f"{name}-{repeat}")
                runs[name].append(run)
                print(f"{name:>10}: {run['train_images_per_second']:,.0f} img/s training "
                      f"(first epoch {run['first_epoch_images_per_second']:,.0f}), "
                      f"{run['wall_seconds']:.1f} s end to end")
    for name, repeats in runs.items():
        best = max(repeats, key=lambda r: r["train_images_per_second"])
        figures.update({f"{name}_{key}": value for key, value in best.items()})
    figures["speedup_batched_over_per_image"] = (figures["batched_train_images_per_second"]
                                                 / figures["per_image_train_images_per_second"])
    print(f"policy alone: batched {figures['policy_only_batched_images_per_second']:,.0f} img/s, "
          f"per image ({workers} workers) "
          f"{figures['policy_only_per_image_images_per_second']:,.0f} img/s")
    print(json.dumps({"benchmark": "evaluate", "device": device_description(device),
                      "dataset": args.dataset, "model": args.model, "epochs": args.epochs,
                      "train_size": args.train_size, "batch_size": args.batch_size,
                      "workers": workers, "repeats": args.repeats,
                      "threads": torch.get_num_threads(), "schedule": str(args.schedule),
                      "torch": torch.__version__, **figures}))


if __name__ == "__main__":
    try:
        main()
    except HbaError as error:  # bad input: one line, no traceback
        sys.exit(f"error: {error}")
