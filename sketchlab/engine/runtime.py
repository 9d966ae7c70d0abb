"""Where and how a process runs: device choice, seeding, determinism and its place in a torchrun job."""

from __future__ import annotations

import os
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
