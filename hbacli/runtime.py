"""Where and how tensors run: device choice, bf16 autocast, compilation, seeding, versions."""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import random
import shutil

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


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA; plain fp32 on CPU (CPU bf16 is slower on most machines)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


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


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    threads = torch.get_num_threads()
    return f"cpu ({platform.processor() or platform.machine()}, {threads} thread{'s' * (threads != 1)})"


def package_versions() -> dict[str, str]:
    import torchvision

    from . import __version__

    return {"hbacli": __version__, "torch": torch.__version__,
            "torchvision": torchvision.__version__, "numpy": np.__version__,
            "python": platform.python_version()}
