"""Throughput of A(x; p, m): the batched policy against a per-image PIL loop of the same policy.

    python benchmarks/augment.py [--seconds 1.0] [--batches 128 1024]

Images: always real ones, never random: 32×32 CIFAR-10 training images from the full archive
(``--archive``, else $HBA_DATA/cifar10-jpeg.tar.gz, else ../shared/datasets/cifar10-jpeg.tar.gz)
when there is one, else from the copy shipped in the repository (tests/data/cifar10-jpeg.tar.gz,
1,000 training images), else the embedded digits (grey, made RGB); repeated to fill a batch. The
first line printed and the JSON say which. Policy: every probability 0.5, every magnitude mid-range.
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
ROOT = Path(__file__).resolve().parents[1]
ARCHIVE_NAME = "cifar10-jpeg.tar.gz"
SHIPPED_ARCHIVE = ROOT / "tests" / "data" / ARCHIVE_NAME  # 1,000 train + 200 test images


def archive_candidates(archive: Path | None) -> list[Path]:
    """Where real CIFAR-10 may be, best first: the full archive, then the shipped slice."""
    found = [archive] if archive else []
    if os.environ.get("HBA_DATA"):
        found.append(Path(os.environ["HBA_DATA"]).expanduser() / ARCHIVE_NAME)
    found += [ROOT.parent / "shared" / "datasets" / ARCHIVE_NAME, SHIPPED_ARCHIVE]
    return found


def read_archive(path: Path, n: int) -> np.ndarray:
    """Up to n uint8 training images N×32×32×3 of an ImageFolder archive (train/<class>/…)."""
    images = []
    with tarfile.open(path, "r:gz") as tar:
        for member in tar:
            if member.isfile() and member.name.startswith("train/"):
                with Image.open(io.BytesIO(tar.extractfile(member).read())) as im:
                    images.append(np.asarray(im.convert("RGB")))
                if len(images) == n:
                    break
    return np.stack(images) if images else np.zeros((0, 32, 32, 3), np.uint8)


def load_images(n: int, archive: Path | None = None) -> tuple[np.ndarray, str]:
    """Up to n real uint8 images N×32×32×3 and a line saying which: CIFAR-10 from the first
    archive found (the full one, else the shipped slice), else the embedded digits."""
    for path in archive_candidates(archive):
        if path.is_file():
            images = read_archive(path, n)
            if len(images):
                return images, f"real CIFAR-10 training images from {path}"
    from hbacli.datasets import load_dataset

    digits = load_dataset("digits", None, None, None, 0).train_images[:n]  # N×C×H×W uint8
    digits = np.ascontiguousarray(np.asarray(digits).transpose(0, 2, 3, 1))
    if digits.shape[-1] == 1:
        digits = np.repeat(digits, 3, axis=-1)
    return digits, "the embedded digits (hbacli.datasets.load_dataset('digits'), grey as RGB)"


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
    parser.add_argument("--archive", type=Path, default=None,
                        help="a CIFAR-10 ImageFolder archive to take the images from")
    args = parser.parse_args()

    images, source = load_images(max(args.batches), args.archive)
    print(f"images: {source}", flush=True)
    runs = [(torch.device("cpu"), "sorted")]
    if ops_native.library() is not None:
        runs.insert(0, (torch.device("cpu"), "native"))
    if torch.cuda.is_available():
        runs += [(torch.device("cuda"), "masked"), (torch.device("cuda"), "compiled")]
    load = os.getloadavg()[0]
    pil = pil_rate(images, args.seconds)
    print(f"images: {len(images)} distinct, 32×32 ({source}); policy: p = 0.5, mid-range "
          f"magnitudes; {os.cpu_count()} CPUs, load average {load:.1f}")
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
