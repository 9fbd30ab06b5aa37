"""Rebuild tests/data/cifar10-jpeg.tar.gz, the small CIFAR-10 fixture the tests read.

It takes the first TRAIN_PER_CLASS train and TEST_PER_CLASS test images (by file name:
0000.jpg, 0001.jpg, …) of every class from the full copy, ../shared/datasets/cifar10-jpeg.tar.gz,
and stores their JPEG bytes unchanged in the same ImageFolder layout (train/<class>/NNNN.jpg,
test/<class>/NNNN.jpg). The output is byte-for-byte reproducible: members in sorted order, no
directory entries, fixed metadata (mtime 0, root/root, 0644), gzip header without a time.

    python tests/data/make_fixture.py [--source PATH] [--out PATH] [--train N] [--test N]
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import tarfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE.parents[2] / "shared" / "datasets" / "cifar10-jpeg.tar.gz"
OUT = HERE / "cifar10-jpeg.tar.gz"
TRAIN_PER_CLASS = 100
TEST_PER_CLASS = 20
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
           "truck")


def pick(source: Path, per_class: dict[str, int]) -> dict[str, bytes]:
    """{"train/cat/0000.jpg": jpeg bytes, …}: the first per_class[split] names of each class."""
    found: dict[tuple[str, str], dict[str, bytes]] = {}
    with tarfile.open(source, "r:gz") as tar:
        for member in tar:
            parts = member.name.split("/")
            if len(parts) != 3 or not member.isfile() or parts[0] not in ("train", "test"):
                continue
            bucket = found.setdefault((parts[0], parts[1]), {})
            bucket[member.name] = tar.extractfile(member).read()
    picked: dict[str, bytes] = {}
    for split, count in per_class.items():
        for cls in CLASSES:
            bucket = found.get((split, cls), {})
            names = sorted(bucket)[:count]
            if len(names) < count:
                raise SystemExit(f"{source}: {split}/{cls}/ has only {len(names)} images")
            picked.update((n, bucket[n]) for n in names)
    return picked


def write(images: dict[str, bytes], out: Path) -> None:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name in sorted(images):
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(images[name]), 0, 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            tar.addfile(info, io.BytesIO(images[name]))
    packed = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=packed, compresslevel=9, mtime=0) as gz:
        gz.write(raw.getvalue())
    out.write_bytes(packed.getvalue())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=SOURCE)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--train", type=int, default=TRAIN_PER_CLASS, help="images per class")
    parser.add_argument("--test", type=int, default=TEST_PER_CLASS, help="images per class")
    args = parser.parse_args()
    images = pick(args.source, {"train": args.train, "test": args.test})
    write(images, args.out)
    data = args.out.read_bytes()
    print(f"{args.out}: {len(images)} images, {len(data):,} bytes, "
          f"sha256 {hashlib.sha256(data).hexdigest()}")


if __name__ == "__main__":
    main()
