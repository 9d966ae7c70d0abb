"""Where and how a process runs: device choice, seeding, determinism and its place in a torchrun job."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import random
from dataclasses import dataclass

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def set_deterministic(enabled: bool) -> None:
    """``torch.use_deterministic_algorithms``: bit-identical GPU runs at some speed cost.

    On a CPU our models are deterministic anyway. On CUDA, cuBLAS needs a fixed workspace for
    deterministic matmuls, which must be set before the first cuBLAS call, hence the env variable here.
    """
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    torch.use_deterministic_algorithms(enabled)


# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4


def has_glibc_malloc() -> bool:
    """Whether this process allocates with glibc's malloc (the one :func:`keep_freed_memory` tunes)."""
    return platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep freed memory for reuse instead of returning it to the kernel.

    A CPU training step allocates the same large buffers every step (the recurrences' activation tapes:
    hundreds of MB at magenta's sizes). glibc serves blocks over its mmap threshold (at most 32 MB) with
    fresh mmaps and unmaps them on free, so every step first-touches them again: about a million page
    faults per step, seconds of kernel time. Serving everything from the heap and never trimming it
    makes later steps reuse the same pages. The price: the process keeps its peak memory until it exits.

    This is the effect PyTorch's CPU tuning guide gets by preloading jemalloc or tcmalloc; those need
    system packages and must be chosen before the process starts, so we set glibc's own knobs instead.
    Returns whether the setting was applied (False off glibc, e.g. macOS or musl).
    """
    if not has_glibc_malloc():
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return False
    # A trim threshold of -1 turns trimming off for any size (mallopt(3)). The largest positive one, 2 GiB,
    # is not enough: a CPU step at magenta's sizes frees more than that at once (the hyper cell's fused
    # tapes), and glibc then handed the top of the heap back, costing about 0.5 M page faults a step.
    # mallopt returns 1 on success
    return bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, -1))


def pick_device(device: str = "auto") -> torch.device:
    """``auto`` → this rank's CUDA device when there is one, else the CPU."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        return torch.device("cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"trainer.device={device} but CUDA is not available on this machine; use device=auto or cpu")
    return dev


@dataclass
class DistInfo:
    """Where this process sits in a torchrun job (rank 0 of 1 without one)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls) -> DistInfo:
        return cls(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                   int(os.environ.get("LOCAL_RANK", 0)))


def init_distributed(device: torch.device) -> DistInfo:
    """Join the process group torchrun set up (no-op for a single process)."""
    info = DistInfo.from_env()
    if info.world_size > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        torch.distributed.init_process_group(backend=backend)
    return info
