"""Data benchmarks: first (decode) vs cached load of CIFAR-10, and batches per second.

    python benchmarks/data.py [--data-dir ../shared/datasets] [--device auto]

Prints one JSON object. The cache goes to a fresh temporary directory, so the first load
always decodes the archive.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from hbacli.datasets import load_dataset
from hbacli.errors import HbaError
from hbacli.loaders import DeviceLoader
from hbacli.pipeline import BaselinePipeline
from hbacli.runtime import device_description, resolve_device

ROOT = Path(__file__).resolve().parents[1]


def _timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def loader_throughput(splits, device: torch.device, batch_size: int = 128, epochs: int = 2) -> dict:
    """Images per second through DeviceLoader + the CIFAR baseline pipeline (train mode)."""
    loader = DeviceLoader(splits.train_images, splits.train_labels, batch_size, device, seed=0)
    pipeline = BaselinePipeline(splits.family, splits.mean, splits.std)
    generator = torch.Generator(device=device).manual_seed(0)
    for images, _ in loader:          # warm-up epoch (allocations, kernels)
        pipeline.train(images, generator)
    _sync(device)
    start = time.perf_counter()
    seen = 0
    for _ in range(epochs):
        for images, _ in loader:
            pipeline.train(images, generator)
            seen += len(images)
    _sync(device)
    seconds = time.perf_counter() - start
    return {"device": device_description(device), "batch_size": batch_size,
            "images_per_second": round(seen / seconds), "seconds_per_epoch":
            round(seconds / epochs, 4), "train_images": len(splits.train_labels)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "datasets"))
    parser.add_argument("--dataset", default="cifar10")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = resolve_device(args.device)
    with tempfile.TemporaryDirectory() as cache:
        first, first_s = _timed(lambda: load_dataset(args.dataset, args.data_dir, cache=cache))
        second, second_s = _timed(lambda: load_dataset(args.dataset, args.data_dir, cache=cache))
        cache_bytes = sum(p.stat().st_size for p in Path(cache).rglob("*.npz"))
    assert torch.equal(first.train_images, second.train_images)
    report = {
        "dataset": args.dataset, "torch_threads": torch.get_num_threads(),
        "first_load_s": round(first_s, 2), "cached_load_s": round(second_s, 2),
        "cache_mb": round(cache_bytes / 2**20, 1),
        "sizes": {"train": len(first.train_labels), "val": len(first.val_labels),
                  "test": len(first.test_labels)},
        "loader": loader_throughput(first, device),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    try:
        main()
    except HbaError as error:  # bad input: one line, no traceback
        sys.exit(f"error: {error}")
