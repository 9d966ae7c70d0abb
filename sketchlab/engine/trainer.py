"""One training loop for every sketch model, on CPU or GPU, single process or torchrun/DDP."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sketchlab.engine.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from sketchlab.models.base import SketchModel
from sketchlab.validation import check_bool, check_choice, check_device, check_float, check_int

log = logging.getLogger(__name__)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


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


class _LossModule(nn.Module):
    """Exposes ``model.loss`` as ``forward`` so DistributedDataParallel can hook gradient sync onto it."""

    def __init__(self, model: SketchModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: dict[str, torch.Tensor], step: int) -> dict[str, torch.Tensor]:
        return self.model.loss(batch, step)


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """The batch with every tensor moved to ``device``."""
    non_blocking = device.type == "cuda"
    return {k: v.to(device, non_blocking=non_blocking) if torch.is_tensor(v) else v for k, v in batch.items()}


@torch.no_grad()
def loss_sums(model: SketchModel, batches: Iterable[dict[str, Any]], device: torch.device, step: int = 0,
              autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
              ) -> tuple[dict[str, float], int]:
    """Sum of each loss entry weighted by batch size, and the number of sketches, over ``batches``."""
    sums: dict[str, float] = {}
    count = 0
    for batch in batches:
        batch = to_device(batch, device)
        n = len(next(iter(batch.values())))
        with autocast():
            out = model.loss(batch, step)
        for key, value in out.items():
            sums[key] = sums.get(key, 0.0) + float(value.detach().float()) * n
        count += n
    return sums, count


@dataclass
class TrainResult:
    step: int
    best_val: float
    last_val: dict[str, float] = field(default_factory=dict)
    checkpoint: Path | None = None


class Trainer:
    """Runs optimisation steps with validation, checkpoints and logging.

    ``precision="bf16"`` autocasts the forward pass to bfloat16 (on GPUs that support it; the loss
    itself is computed in float32 by the models). ``grad_clip_mode`` is ``"norm"`` (global norm) or
    ``"value"`` (element-wise, as magenta's Sketch-RNN). ``val_every``/``ckpt_every``/``log_every``
    are in steps; 0 disables. ``threads`` sets torch's CPU threads (None or 0: torch's default).
    Bad values raise :class:`~sketchlab.validation.ConfigValueError` naming the ``trainer.*`` key.
    """

    def __init__(self, max_steps: int = 1000, val_every: int = 500, log_every: int = 50, ckpt_every: int = 500,
                 val_batches: int | None = None, grad_clip: float | None = 1.0, grad_clip_mode: str = "norm",
                 precision: str | int = "32", device: str = "auto", progress: bool = True,
                 seed: int = 0, threads: int | None = None) -> None:
        # the keys users write (conf/trainer/*.yaml is the `trainer` node), so errors name what to fix
        self.max_steps = check_int(max_steps, "trainer.max_steps", min=0)
        self.val_every = check_int(val_every, "trainer.val_every", min=0)
        self.log_every = check_int(log_every, "trainer.log_every", min=0)
        self.ckpt_every = check_int(ckpt_every, "trainer.ckpt_every", min=0)
        self.val_batches = check_int(val_batches, "trainer.val_batches", min=1, optional=True)
        self.grad_clip = check_float(grad_clip, "trainer.grad_clip", min=0, optional=True)
        self.grad_clip_mode = check_choice(grad_clip_mode, "trainer.grad_clip_mode", ("norm", "value"))
        self.precision = check_choice(precision, "trainer.precision", ("32", "bf16"))
        self.device = pick_device(check_device(device, "trainer.device"))
        threads = check_int(threads, "trainer.threads", min=0, optional=True)
        if threads:
            # small-op loops (ODE solves, RNN steps) on a shared CPU run far faster on one thread
            torch.set_num_threads(threads)
        self.progress = check_bool(progress, "trainer.progress")
        self.seed = check_int(seed, "trainer.seed")
        self.dist = DistInfo()

    # -- pieces -----------------------------------------------------------------------------------
    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.precision == "bf16":
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _clip(self, params: Iterable[torch.Tensor]) -> torch.Tensor | None:
        if not self.grad_clip:
            return None
        if self.grad_clip_mode == "value":
            torch.nn.utils.clip_grad_value_(params, self.grad_clip)
            return None
        return torch.nn.utils.clip_grad_norm_(params, self.grad_clip)

    @torch.no_grad()
    def validate(self, model: SketchModel, data: Any, split: str = "valid") -> dict[str, float]:
        """Mean of each loss entry over the split (weighted by batch size), model in eval mode."""
        was_training = model.training
        model.eval()
        sums, count = loss_sums(model, data.eval_batches(split, self.val_batches), self.device, self._step,
                                self._autocast)
        model.train(was_training)
        if self.dist.world_size > 1:
            keys = sorted(sums)
            t = torch.tensor([sums[k] for k in keys] + [count], dtype=torch.float64, device=self.device)
            torch.distributed.all_reduce(t)
            sums, count = dict(zip(keys, t[:-1].tolist())), int(t[-1])
        return {k: v / max(count, 1) for k, v in sums.items()}

    def _checkpoint_state(self, model, optimizer, scheduler, data, step, best_val, extra) -> dict[str, Any]:
        return {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict() if scheduler is not None else None,
                "data": data.state_dict() if hasattr(data, "state_dict") else None,
                "step": step, "best_val": best_val, "rng": rng_state(), **extra}

    # -- the loop ---------------------------------------------------------------------------------
    def fit(self, model: SketchModel, data: Any, optimizer: torch.optim.Optimizer,
            scheduler: torch.optim.lr_scheduler.LRScheduler | None = None, logger: Any = None,
            ckpt_dir: str | Path | None = None, resume: str | Path | None = None,
            on_validation: Callable[[SketchModel, int], None] | None = None,
            checkpoint_extra: dict[str, Any] | None = None) -> TrainResult:
        """Train ``model`` until ``max_steps``; ``resume`` continues a checkpoint (file or run dir).

        The optimizer must already hold ``model``'s parameters; the model is moved to the device here.
        """
        self.dist = init_distributed(self.device)
        is_main = self.dist.is_main
        model.to(self.device)
        _move_optimizer_state(optimizer, self.device)
        ckpt_dir = Path(ckpt_dir) if ckpt_dir else None
        extra = dict(checkpoint_extra or {})
        start, best_val = 0, math.inf
        if resume:
            state = load_checkpoint(resume, map_location=self.device)
            try:
                model.load_state_dict(state["model"])
                optimizer.load_state_dict(state["optimizer"])
            except (RuntimeError, ValueError, KeyError) as exc:
                raise ValueError(f"cannot resume from {resume}: the checkpoint does not fit this model/optimizer "
                                 f"config (resume with the settings it was trained with). {exc}") from exc
            if scheduler is not None and state.get("scheduler") is not None:
                scheduler.load_state_dict(state["scheduler"])
            if state.get("data") is not None and hasattr(data, "load_state_dict"):
                data.load_state_dict(state["data"])
            set_rng_state(state["rng"])
            start, best_val = int(state["step"]), float(state.get("best_val", math.inf))
            log.info("resumed from %s at step %d", resume, start)
        else:
            seed_everything(self.seed + self.dist.rank)
        self._step = start

        runner: nn.Module = _LossModule(model)
        if self.dist.world_size > 1:
            runner = nn.parallel.DistributedDataParallel(
                runner, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        logger = logger if (logger is not None and is_main) else None

        from tqdm.auto import tqdm

        bar = tqdm(total=self.max_steps, initial=start, disable=not (self.progress and is_main),
                   dynamic_ncols=True, desc="train")
        sums: dict[str, torch.Tensor] = {}
        bad = torch.zeros((), dtype=torch.bool, device=self.device)
        n_acc, t0 = 0, time.perf_counter()
        last_val: dict[str, float] = {}
        last_ckpt: Path | None = None
        batches = data.train_batches()
        params = [p for p in model.parameters() if p.requires_grad]
        model.train()

        def check_finite(step: int) -> None:
            if bool(bad):
                raise TrainingDiverged(
                    f"loss became NaN/inf at or before step {step}; stopping. "
                    + (f"The last good checkpoint is {last_ckpt}. " if last_ckpt else "No checkpoint was written. ")
                    + "Try a lower learning rate (optim.lr), gradient clipping (trainer.grad_clip) "
                      "or precision=32.")

        try:
            for step in range(start, self.max_steps):
                self._step = step
                batch = to_device(next(batches), self.device)
                with self._autocast():
                    out = runner(batch, step)
                loss = out["loss"]
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                grad_norm = self._clip(params)
                optimizer.step()
                if scheduler is not None:
                    scheduler.step()
                bad |= ~torch.isfinite(loss.detach())
                for key, value in out.items():
                    v = value.detach().float()
                    sums[key] = sums[key] + v if key in sums else v
                if grad_norm is not None:
                    sums["grad_norm"] = sums.get("grad_norm", 0) + grad_norm.detach().float()
                n_acc += 1
                done = step + 1
                bar.update(1)

                if self.log_every and (done % self.log_every == 0 or done == self.max_steps):
                    check_finite(done)
                    elapsed = time.perf_counter() - t0
                    metrics = {f"train/{k}": float(v) / n_acc for k, v in sums.items()}
                    metrics["train/lr"] = optimizer.param_groups[0]["lr"]
                    metrics["train/steps_per_s"] = n_acc / max(elapsed, 1e-9)
                    bar.set_postfix(loss=f"{metrics['train/loss']:.4f}")
                    if logger is not None:
                        logger.log_metrics(metrics, done)
                    sums, n_acc, t0 = {}, 0, time.perf_counter()

                if self.val_every and (done % self.val_every == 0 or done == self.max_steps):
                    check_finite(done)
                    last_val = self.validate(model, data)
                    best_val = min(best_val, last_val.get("loss", math.inf))
                    if logger is not None:
                        logger.log_metrics({f"val/{k}": v for k, v in last_val.items()}, done)
                    if on_validation is not None and is_main:
                        on_validation(model, done)
                    model.train()

                if ckpt_dir is not None and is_main and self.ckpt_every and (
                        done % self.ckpt_every == 0 or done == self.max_steps):
                    check_finite(done)
                    state = self._checkpoint_state(model, optimizer, scheduler, data, done, best_val, extra)
                    last_ckpt = save_checkpoint(ckpt_dir / "last.pt", state)
                    if last_val and last_val.get("loss", math.inf) <= best_val:
                        save_checkpoint(ckpt_dir / "best.pt", state)
            check_finite(self.max_steps)
        finally:
            bar.close()
        return TrainResult(step=max(self.max_steps, start), best_val=best_val, last_val=last_val,
                           checkpoint=last_ckpt)


def _move_optimizer_state(optimizer: torch.optim.Optimizer, device: torch.device) -> None:
    """Optimizer state created before the model moved must follow it."""
    for state in optimizer.state.values():
        for key, value in state.items():
            if torch.is_tensor(value) and key != "step":
                state[key] = value.to(device)
