"""Table 6 at reduced scale: HBA and STN tuning AlexNet's 15 regularisation hyperparameters.

The paper's §4.3 (Table 6) trains Self-Tuning Networks' CIFAR-10 AlexNet while tuning the
``stn`` space (colour jitter, Cutout length and holes, input dropout and scaling, 7 dropout
rates of the network), and reports validation loss, test loss and test error:

    grid search 0.794 / 0.809 / –;  random search 0.921 / 0.752 / –;
    STN 0.579 ± 0.005 / 0.582 ± 0.004 / 19.86 ± 0.21 %;  HBA 0.548 ± 0.005 / 0.556 ± 0.005 /
    18.76 ± 0.11 %

Here, on a CIFAR-10 slice on the CPU, three arms with the same data, epochs, seeds and SGD:

- ``hba``: ``hba search --space stn --model alexnet --strategy conv`` (the paper's choice);
- ``stn``: the same with ``--method stn`` (every layer a hyper-layer, perturbation scale 0.5
  learned with STN's entropy term, raw λ fed to the hyper-layers);
- ``fixed``: the same search with λ frozen at STN's starting values (``--val-steps 0
  --sigma 0``): the network trained with fixed hyperparameters in the same harness.

Each run's final network (``network.pt``: the hypernetwork at its final λ) is scored on the
validation split it tuned on and on the test set. SGD as STN's (momentum 0.9 without
Nesterov, no weight decay), cosine learning rate, the λ learning rate Table 8's α' = 0.03 for
both methods (STN's 0.003 barely moves λ in a few epochs). STN's batch 128 and lr 0.01 are for
40,000 images and hundreds of epochs: on 2,000 images AlexNet (no BatchNorm) was still at
chance after 4 epochs at batch 128 (lr 0.01 or 0.05, 60 steps), and started learning in
epoch 2 at batch 32 and lr 0.03, the CPU defaults here (``--batch-size 128 --lr 0.01`` gives
STN's). Jobs run in ``--jobs`` processes of one thread each; everything is kept under
``--out``; the last line printed is one JSON object.

    python benchmarks/regularisation.py --data-dir ../shared/datasets     # CPU, ~40 min
    python benchmarks/regularisation.py --data-dir DIR --device cuda --train-size 40000 \
        --val-size 10000 --epochs 200 --batch-size 128 --lr 0.01 --jobs 1  # the paper's scale
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from quality import parse_overrides  # the same --set FIELD=VALUE as quality.py (this folder)

ARMS: dict[str, dict[str, Any]] = {
    "hba": {"method": "hba", "strategy": "conv"},
    "stn": {"method": "stn"},
    "fixed": {"method": "hba", "strategy": "conv", "val_steps": 0, "sigma": 0.0},
}
PAPER = {  # Table 6: validation loss, test loss, test error %
    "grid search": (0.794, 0.809, None), "random search": (0.921, 0.752, None),
    "STN": ("0.579 ± 0.005", "0.582 ± 0.004", "19.86 ± 0.21"),
    "HBA": ("0.548 ± 0.005", "0.556 ± 0.005", "18.76 ± 0.11"),
}
# STN's SGD (cnn/hypertrain.py: SGD(lr=0.01, momentum=0.9), no weight decay, batch 128); lr and
# batch are flags, with CPU-scale defaults (see the module docstring).
SHARED = {"space": "stn", "model": "alexnet", "momentum": 0.9, "nesterov": False,
          "weight_decay": 0.0, "hyper_lr": 0.03, "lr_schedule": "cosine"}
CPU_SCALE = {"lr": 0.03, "batch_size": 32}


def run_job(arm: str, seed: int, dataset: str, settings: dict[str, Any],
            run_dir: str) -> dict[str, Any]:
    """One search; its final network scored on the validation and test sets."""
    import torch

    torch.set_num_threads(1)
    import torch.nn.functional as F

    from hbacli.datasets import load_dataset
    from hbacli.nets import build_model
    from hbacli.pipeline import BaselinePipeline
    from hbacli.presets import resolve_search_config
    from hbacli.search import CHECKPOINT_NAME, NETWORK_NAME, run_search
    from hbacli.spaces import get_space

    cfg = resolve_search_config(dataset, None, seed=seed,
                                **{**SHARED, **ARMS[arm], **settings})
    run = Path(run_dir)
    started = time.perf_counter()
    run_search(cfg, out=run / "schedule-final.json", run_dir=run, progress=False)
    seconds = time.perf_counter() - started
    device = torch.device(cfg.device if cfg.device != "auto" else
                          ("cuda" if torch.cuda.is_available() else "cpu"))
    splits = load_dataset(cfg.dataset, cfg.data_dir, cfg.train_size, cfg.val_size,
                          cfg.split_seed)
    model = build_model(cfg.model, splits.num_classes)
    model.load_state_dict(torch.load(run / NETWORK_NAME, map_location="cpu", weights_only=True))
    model.to(device).eval()
    pipeline = BaselinePipeline(splits.family, splits.mean, splits.std)

    @torch.no_grad()
    def score(images: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
        loss, wrong = 0.0, 0
        for start in range(0, labels.shape[0], 500):
            x = pipeline.eval(images[start:start + 500].to(device))
            y = labels[start:start + 500].to(device)
            logits = model(x).float()
            loss += float(F.cross_entropy(logits, y, reduction="sum"))
            wrong += int((logits.argmax(1) != y).sum())
        return loss / labels.shape[0], 100.0 * wrong / labels.shape[0]

    val_loss, val_error = score(splits.val_images, splits.val_labels)
    test_loss, test_error = score(splits.test_images, splits.test_labels)
    # λ after the last epoch (the schedule's entries are λ at each epoch's start)
    lam = torch.load(run / CHECKPOINT_NAME, map_location="cpu", weights_only=True)["engine"]["lam"]
    searched = get_space(cfg.space)
    final = dict(zip(searched.scalar_names, searched.to_physical(lam.double().numpy()).tolist(),
                     strict=True))
    return {"arm": arm, "seed": seed, "val_loss": val_loss, "val_error": val_error,
            "test_loss": test_loss, "test_error": test_error, "search_seconds": seconds,
            "final_hyperparameters": final}


def mean_std(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.environ.get("HBA_DATA"),
                        help="folder with CIFAR-10 (e.g. ../shared/datasets)")
    parser.add_argument("--dataset", default="cifar10")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--train-size", type=int, default=2000)
    parser.add_argument("--val-size", type=int, default=1000)
    parser.add_argument("--lr", type=float, default=CPU_SCALE["lr"])
    parser.add_argument("--batch-size", type=int, default=CPU_SCALE["batch_size"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--arms", default=",".join(ARMS))
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="FIELD=VALUE", help="a search setting for every arm run, e.g. "
                        "sigma=0.5 (JSON values)")
    parser.add_argument("--out", type=Path, default=Path("runs/regularisation"))
    args = parser.parse_args()

    seeds = [int(s) for s in args.seeds.split(",")]
    arms = args.arms.split(",")
    settings = {**parse_overrides(args.overrides), "epochs": args.epochs,
                "train_size": args.train_size, "val_size": args.val_size, "lr": args.lr,
                "batch_size": args.batch_size, "device": args.device, "data_dir": args.data_dir}
    out = args.out / time.strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    pool = ProcessPoolExecutor(max_workers=args.jobs, mp_context=get_context("spawn"))
    with pool:
        futures = {(arm, s): pool.submit(run_job, arm, s, args.dataset, settings,
                                           str(out / f"{arm}-seed{s}"))
                   for s in seeds for arm in arms}
        results = []
        for (arm, s), future in futures.items():
            results.append(future.result())
            print(f"[{time.perf_counter() - started:6.0f} s] {arm}, seed {s}: test error "
                  f"{results[-1]['test_error']:.2f} %", file=sys.stderr, flush=True)

    summary = {arm: {metric: mean_std([r[metric] for r in results if r["arm"] == arm])
                     for metric in ("val_loss", "test_loss", "test_error")} for arm in arms}
    print(f"\n{'':14} {'val loss':>16} {'test loss':>16} {'test error %':>16}")
    for arm in arms:
        cells = [f"{summary[arm][m]['mean']:.3f} ± {summary[arm][m]['std']:.3f}"
                 for m in ("val_loss", "test_loss")]
        cells.append(f"{summary[arm]['test_error']['mean']:.2f} ± "
                     f"{summary[arm]['test_error']['std']:.2f}")
        print(f"{arm:14} " + " ".join(f"{c:>16}" for c in cells))
    print("paper (full CIFAR-10, GPU): " + "; ".join(
        f"{name} {v} / {t} / {e if e is not None else '–'}" for name, (v, t, e) in PAPER.items()))
    report = {"benchmark": "regularisation", "dataset": args.dataset, "seeds": seeds,
              "settings": settings,
              "shared": SHARED,
              "arms": {a: ARMS[a] for a in arms}, "summary": summary,
              "runs": results, "seconds": round(time.perf_counter() - started, 1)}
    (out / "regularisation.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
