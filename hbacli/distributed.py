"""Processes of a data-parallel run under torchrun, shared by ``hba evaluate`` and ``hba search``.

One process (no WORLD_SIZE, or 1) is rank 0 of 1 and nothing here touches torch.distributed.
Under ``torchrun --nproc_per_node=N`` each process joins the group (NCCL on CUDA, gloo on the
CPU); rank 0 alone reads run files (passing what it read on), writes and prints.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from .errors import HbaError
from .runtime import compile_network, resolve_device

# ---------------------------------------------------------------------------------------------
# Processes: one, or many under torchrun
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Ranks:
    """This process's place among the data-parallel processes (one process: rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def parallel(self) -> bool:
        return self.world_size > 1

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.parallel:
            dist.all_reduce(tensor)
        return tensor

    def from_main(self, fn: Callable[[], Any]) -> Any:
        """``fn()`` run on rank 0; its value (or its HbaError) on every rank."""
        if not self.parallel:
            return fn()
        box: list[Any] = [None]
        if self.is_main:
            try:
                box[0] = ("value", fn())
            except HbaError as exc:
                box[0] = ("error", str(exc))
        dist.broadcast_object_list(box, src=0)
        kind, value = box[0]
        if kind == "error":
            raise HbaError(value)
        return value

    def main_first(self, fn: Callable[[], Any]) -> Any:
        """``fn()`` on rank 0, then on the others (a download happens once); rank 0's
        HbaError is raised on every rank."""
        value = None

        def on_main() -> None:
            nonlocal value
            value = fn()

        self.from_main(on_main)
        return value if self.is_main else fn()


def start_processes(device_name: str) -> tuple[Ranks, torch.device, bool]:
    """Join torchrun's process group when WORLD_SIZE > 1; returns (ranks, device, created)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    device = resolve_device(device_name)
    if world_size <= 1:
        return Ranks(), device, False
    if device.type == "cuda":
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    created = not dist.is_initialized()
    if created:
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Ranks(dist.get_rank(), dist.get_world_size()), device, created


def shard_size(batch_size: int, ranks: Ranks) -> int:
    if batch_size % ranks.world_size:
        raise HbaError(f"batch size {batch_size} does not split evenly over "
                       f"{ranks.world_size} processes")
    return batch_size // ranks.world_size


def wrap_for_training(model: torch.nn.Module, device: torch.device, ranks: Ranks,
                      compile: bool) -> torch.nn.Module:
    """The module the training loop calls: ``model``, under DDP when there are several ranks,
    compiled last (in place) when asked. DDP first, then compile: torch.compile then splits the
    graph at DDP's gradient buckets so their all-reduces overlap the backward; a network compiled
    before wrapping hides its backward from DDP, whose all-reduce then waits for all of it."""
    from torch.nn.parallel import DistributedDataParallel

    network = model
    if ranks.parallel:
        network = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    if compile:
        compile_network(network, device, cuda_graphs=not ranks.parallel)
    return network
