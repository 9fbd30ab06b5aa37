"""Throughput of A(x; p, m): the batched policy against a per-image PIL loop of the same policy.

    python benchmarks/augment.py [--seconds 1.0] [--batches 128 1024]

Images: real 32×32 CIFAR-10 training images from ../shared/datasets/cifar10-jpeg.tar.gz when the
archive is there, random ones otherwise. Policy: every probability 0.5, every magnitude mid-range.
The batched policy runs on the CPU (on one intra-op thread, by design: see ``hbacli.policy``)
with the C kernels (the default) and with the torch kernels (the fallback without a compiler),
and, when present, on CUDA, eager and compiled (synchronised, after warm-up, which includes
the compilation); the PIL loop runs
``policy.augment_pil`` image by image in this one process, as one DataLoader worker would. Each
figure is the median of ~0.1 s rounds; the load average is printed because these machines are
shared. The last line is JSON with every figure.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import tarfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from hbacli import ops_native, policy, space
from hbacli.runtime import device_description

KERNEL_NAMES = {"native": "C kernels, the CPU default", "sorted": "torch kernels, the fallback",
                "masked": "torch kernels", "compiled": "torch.compile, --compile"}
ARCHIVE = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "cifar10-jpeg.tar.gz"


def load_images(n: int) -> tuple[np.ndarray, str]:
    """n uint8 images N×32×32×3: the archive's first training images, or random ones."""
    if ARCHIVE.is_file():
        images = []
        with tarfile.open(ARCHIVE, "r:gz") as tar:
            for member in tar:
                if member.isfile() and member.name.startswith("train/") and len(images) < n:
                    with Image.open(io.BytesIO(tar.extractfile(member).read())) as im:
                        images.append(np.asarray(im.convert("RGB")))
                if len(images) == n:
                    return np.stack(images), f"CIFAR-10 ({ARCHIVE.name})"
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), "random"


def policy_parameters() -> tuple[np.ndarray, np.ndarray]:
    mid = space.split_physical(0.5 * (space.LAMBDA_LOW + space.LAMBDA_HIGH))[1]
    return np.full(space.NUM_OP_COPIES, 0.5), np.nan_to_num(mid)


def rate(run, images_per_call: int, seconds: float, sync=lambda: None) -> float:
    """Median images/s over rounds of about 0.1 s each, after two warm-up calls."""
    for _ in range(2):
        run()
    sync()
    rounds, deadline = [], time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(rounds) < 3:
        calls, start = 0, time.perf_counter()
        while True:
            run()
            calls += 1
            sync()
            elapsed = time.perf_counter() - start
            if elapsed >= 0.1:
                break
        rounds.append(calls * images_per_call / elapsed)
    return statistics.median(rounds)


def batched_rate(images: np.ndarray, batch: int, device: torch.device, kernels: str,
                 seconds: float) -> float:
    p, m = policy_parameters()
    reps = -(-batch // len(images))
    x = torch.from_numpy(np.concatenate([images] * reps)[:batch]).permute(0, 3, 1, 2).contiguous()
    x = x.to(device)
    p_t = torch.tensor(p, dtype=torch.float32, device=device)
    m_t = torch.tensor(m, dtype=torch.float32, device=device)
    generator = torch.Generator(device=device).manual_seed(0)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    return rate(lambda: policy.augment_batch(x, p_t, m_t, generator, kernels), batch, seconds, sync)


def pil_rate(images: np.ndarray, seconds: float) -> float:
    p, m = policy_parameters()
    pil_images = [Image.fromarray(a) for a in images]
    rng = np.random.default_rng(0)
    return rate(lambda: [policy.augment_pil(im, p, m, rng) for im in pil_images],
                len(pil_images), seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="timing per figure")
    parser.add_argument("--batches", type=int, nargs="+", default=[128, 1024])
    args = parser.parse_args()

    images, source = load_images(max(args.batches))
    runs = [(torch.device("cpu"), "sorted")]
    if ops_native.library() is not None:
        runs.insert(0, (torch.device("cpu"), "native"))
    if torch.cuda.is_available():
        runs += [(torch.device("cuda"), "masked"), (torch.device("cuda"), "compiled")]
    load = os.getloadavg()[0]
    pil = pil_rate(images, args.seconds)
    print(f"images: {len(images)} × 32×32 {source}; policy: p = 0.5, mid-range magnitudes; "
          f"{os.cpu_count()} CPUs, load average {load:.1f}")
    print(f"PIL per-image loop, one process: {pil:,.0f} img/s")
    results = {"images": source, "cpus": os.cpu_count(), "load_average": round(load, 2),
               "pil_loop_img_per_s": round(pil), "pil_loop_processes": 1, "batched": []}
    for device, kernels in runs:
        for batch in args.batches:
            value = batched_rate(images, batch, device, kernels, args.seconds)
            print(f"batched {device.type} ({KERNEL_NAMES[kernels]}), batch {batch}: "
                  f"{value:,.0f} img/s = {value / pil:.1f}× the PIL loop")
            results["batched"].append({"device": device.type, "kernels": kernels,
                                       "description": device_description(device),
                                       "batch": batch, "img_per_s": round(value),
                                       "ratio_to_pil": round(value / pil, 2)})
    results["load_average_after"] = round(os.getloadavg()[0], 2)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
