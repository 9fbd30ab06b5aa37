"""Replay an HBA schedule in your own training loop: a small CNN on the embedded digits.

    python examples/train_with_schedule.py                      # batched, on the device
    python examples/train_with_schedule.py --per-image          # torchvision-style DataLoader
    python examples/train_with_schedule.py --schedule sched.json --epochs 10

Two ways to replay, same schedule, same result in distribution:
- ``ScheduleAugmenter``: whole uint8 batches on the device (GPU-friendly, no workers);
- ``ScheduleTransform``: one image at a time inside a torchvision ``Compose``, run by
  DataLoader workers (``set_epoch`` reaches them through shared memory).
Either way the schedule is stretched linearly to ``--epochs`` and moved on with ``set_epoch``.
Runs in well under a minute on a laptop CPU.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.transforms import v2

from hbacli.datasets import load_dataset
from hbacli.replay import ScheduleAugmenter, ScheduleTransform, load_schedule

EXAMPLE_SCHEDULE = Path(__file__).resolve().parent / "example-schedule.json"
BATCH = 32


def small_cnn(num_classes: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, num_classes))


class Images(torch.utils.data.Dataset):
    """uint8 C×H×W tensors through a per-image transform (your Dataset would read files)."""

    def __init__(self, images, labels, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.transform(self.images[i]), self.labels[i]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schedule", type=Path, default=EXAMPLE_SCHEDULE)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--per-image", action="store_true",
                        help="ScheduleTransform in DataLoader workers instead of the batched one")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)

    data = load_dataset("digits")                       # uint8 N×3×32×32, 10 classes
    mean = torch.tensor(data.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(data.std, device=device).view(1, 3, 1, 1)
    schedule = load_schedule(args.schedule)

    if args.per_image:
        augment = ScheduleTransform(schedule, epochs=args.epochs, seed=0)
        loader = torch.utils.data.DataLoader(
            Images(data.train_images, data.train_labels, v2.Compose([augment])),
            batch_size=BATCH, shuffle=True, drop_last=True, num_workers=2)

        def batches():
            for images, labels in loader:             # already augmented by the workers
                yield images.to(device), labels.to(device)
    else:
        augment = ScheduleAugmenter(schedule, epochs=args.epochs, device=device, seed=0)
        train_images = data.train_images.to(device)     # the whole set lives on the device
        train_labels = data.train_labels.to(device)

        def batches():
            order = torch.randperm(len(train_labels), device=device)
            for start in range(0, len(order) - BATCH + 1, BATCH):
                index = order[start:start + BATCH]
                yield augment(train_images[index]), train_labels[index]

    model = small_cnn(data.num_classes).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True,
                                weight_decay=5e-4)
    for epoch in range(args.epochs):
        augment.set_epoch(epoch)                        # before the epoch's batches are made
        started, total, count = time.perf_counter(), 0.0, 0
        model.train()
        for images, labels in batches():
            x = (images.float() / 255 - mean) / std
            loss = F.cross_entropy(model(x), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total, count = total + loss.item() * len(labels), count + len(labels)
        print(f"epoch {epoch + 1}/{args.epochs}  loss {total / count:.3f}  "
              f"{count / (time.perf_counter() - started):,.0f} img/s")

    model.eval()
    with torch.no_grad():
        x = (data.test_images.to(device).float() / 255 - mean) / std
        accuracy = (model(x).argmax(1).cpu() == data.test_labels).float().mean().item()
    print(f"test error {100 * (1 - accuracy):.2f}% on {len(data.test_labels)} digits")


if __name__ == "__main__":
    main()
