"""Where and how tensors run: device choice, precision (autocast, grad scaling), compilation,
seeding, versions."""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import random
import shutil
from dataclasses import dataclass

import numpy as np
import torch

from .errors import HbaError


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' → cuda when available, else cpu; 'cuda' without a GPU is a user error.

    On CUDA it also lets cuDNN pick the fastest convolution for each (fixed) shape and fp32
    matrix products use TF32: every training shape here repeats thousands of times."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise HbaError("--device cuda was asked for but no CUDA GPU is available")
    if name == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise HbaError("--device mps was asked for but this torch has no usable Apple GPU (MPS)")
    if name not in ("cpu", "cuda", "mps"):
        raise HbaError(f"unknown device '{name}' (use auto, cpu, cuda or mps)")
    if name == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.set_float32_matmul_precision("high")
    return torch.device(name)


PRECISIONS = ("auto", "bf16", "fp16", "fp32")
NATIVE_BF16_CAPABILITY = (8, 0)   # Ampere and later compute in bf16; older GPUs emulate it


@dataclass(frozen=True)
class Precision:
    """A resolved ``--precision`` on one kind of device: the autocast of the forward passes,
    and whether the backward passes go through a GradScaler (fp16 only).

    ``grad_scaler()`` is disabled (a pass-through: ``scale`` returns the loss, ``step`` calls
    the optimiser's, ``update`` does nothing, its state dict is empty) for bf16 and fp32, so
    the steps are written once and bf16/fp32 compute exactly as without it, with no host
    synchronisation. fp16's scaler reads its inf check back to the host once per optimiser
    step (``GradScaler.step``): the one synchronisation inside a step, and only in fp16."""

    name: str          # "bf16", "fp16" or "fp32"
    device_type: str   # "cpu", "cuda" or "mps"

    @property
    def dtype(self) -> torch.dtype:
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.name, torch.float32)

    @property
    def uses_grad_scaler(self) -> bool:
        return self.name == "fp16"

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.name == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def grad_scaler(self) -> torch.amp.GradScaler:
        """A new scaler for one optimiser (its own scale, checkpointed with it)."""
        return torch.amp.GradScaler(self.device_type, enabled=self.uses_grad_scaler)


def resolve_precision(name: str, device: torch.device) -> Precision:
    """``--precision`` on ``device``; HbaError (one line) where it cannot run there.

    ``auto``: on CUDA bf16 where the GPU computes in bf16 natively (compute capability ≥ 8.0),
    else fp16 with a gradient scaler (V100, T4: they report bf16 "supported" by emulation);
    fp32 on the CPU and mps. Explicit ``bf16`` runs on any CUDA GPU torch can run it on, and on
    the CPU (allowed; slower than fp32 on most CPUs). ``fp16`` is CUDA only (the CPU's fp16
    autocast is slow and patchy). ``fp32`` on CUDA still uses TF32 matrix products
    (``resolve_device``). Resolving an already resolved name gives it back."""
    if name not in PRECISIONS:
        raise HbaError(f"unknown precision '{name}' (use auto, bf16, fp16 or fp32)")
    kind = device.type
    if kind == "cuda":
        if name == "auto":
            native = tuple(torch.cuda.get_device_capability(device)) >= NATIVE_BF16_CAPABILITY
            name = "bf16" if native else "fp16"
        elif name == "bf16" and not torch.cuda.is_bf16_supported():
            raise HbaError(f"--precision bf16: {torch.cuda.get_device_name(device)} cannot "
                           f"compute in bfloat16; use fp16 (or auto) or fp32")
    elif name == "auto":
        name = "fp32"
    elif name == "fp16":
        raise HbaError(f"--precision fp16 is for CUDA GPUs (fp16 autocast on {kind} is slow or "
                       f"unsupported); use fp32 (or auto){', or bf16' * (kind == 'cpu')}")
    elif name == "bf16" and kind != "cpu":
        raise HbaError(f"--precision bf16 runs on CUDA GPUs and the CPU, not on {kind}; use "
                       f"fp32 (or auto)")
    return Precision(name, kind)


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """The autocast ``--precision auto`` gives on ``device``, without its grad scaler: for
    forward passes and benchmarks. Training steps use ``resolve_precision`` (scaler
    included)."""
    return resolve_precision("auto", device).autocast()


def memory_format(device: torch.device) -> torch.memory_format:
    return torch.channels_last if device.type == "cuda" else torch.contiguous_format


def has_cpp_compiler() -> bool:
    """torch.compile builds C++ (CPU kernels, and Triton's launchers on CUDA)."""
    return any(name and shutil.which(name)
               for name in (os.environ.get("CXX"), "c++", "g++", "clang++"))


COMPILING_NOTE = ("--compile: the first epoch includes compiling the network (about a minute; "
                  "cached for later runs)")


def compile_network(module: torch.nn.Module, device: torch.device,
                    cuda_graphs: bool = True) -> None:
    """torch.compile ``module`` in place, so its state_dict keys (and checkpoints) stay as they
    are: fused kernels, and on CUDA (unless ``cuda_graphs`` is False, as under DDP, whose
    all-reduces run between backward kernels) the forward and backward replayed as CUDA
    graphs."""
    if not has_cpp_compiler():
        raise HbaError("--compile needs a C++ compiler (g++ or clang++; or set CXX)")
    graphs = cuda_graphs and device.type == "cuda"
    # torch's C++ builder warns "No CUDA runtime is found" on CPU-only machines: true, and no
    # concern of a CPU compile
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    module.compile(mode="reduce-overhead" if graphs else None)


def use_cpu_threads(device: str) -> None:
    """The thread policy of hba's commands, set once where a command starts (library calls
    leave torch's global state alone): one intra-op thread for CPU runs, unless the user set
    OMP_NUM_THREADS. hba's CPU work is many small kernels (batches of 32×32 images, small
    nets); a second thread gains little on idle cores, and on cores shared with other
    processes every parallel region waits for a descheduled thread (``benchmarks/augment.py``
    measures both)."""
    if "OMP_NUM_THREADS" in os.environ:
        return
    if device == "cpu" or device == "auto" and not torch.cuda.is_available():
        torch.set_num_threads(1)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    threads = torch.get_num_threads()
    processor = platform.processor() or platform.machine()
    return f"cpu ({processor}, {threads} thread{'s' * (threads != 1)})"


def package_versions() -> dict[str, str]:
    import torchvision

    from . import __version__

    return {"hbacli": __version__, "torch": torch.__version__,
            "torchvision": torchvision.__version__, "numpy": np.__version__,
            "python": platform.python_version()}
