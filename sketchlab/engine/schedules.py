"""Learning-rate schedules (built from ``conf/sched``; each takes the optimizer first)."""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


class _Factor:
    """Picklable multiplier of each base lr, so schedulers round-trip through checkpoints."""

    def __init__(self, base_lr: float, kind: str, **kw: float) -> None:
        self.base_lr, self.kind, self.kw = base_lr, kind, kw

    def __call__(self, step: int) -> float:
        kw = self.kw
        if self.kind == "magenta":
            lr = (self.base_lr - kw["min_lr"]) * kw["decay_rate"] ** step + kw["min_lr"]
            return lr / self.base_lr
        if self.kind == "cosine":
            warmup, total = kw["warmup_steps"], kw["total_steps"]
            if step < warmup:
                return (step + 1) / warmup
            progress = min(1.0, (step - warmup) / max(1.0, total - warmup))
            floor = kw["min_lr"] / self.base_lr
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
        if self.kind == "damped_cos2":
            epoch = step // kw["epoch_steps"]
            wt = math.pi * epoch / (2 * kw["period"])
            gamma = math.log(kw["decay"]) / math.pi
            floor = kw["floor"]
            return (1 - floor) * math.exp(-gamma * wt) * math.cos(wt) ** 2 + floor
        return 1.0


def _check_lr(optimizer: Optimizer, min_lr: float) -> None:
    for group in optimizer.param_groups:
        if group["lr"] <= 0 or min_lr < 0 or min_lr > group["lr"]:
            raise ValueError(f"need 0 <= min_lr <= lr and lr > 0, got lr={group['lr']}, min_lr={min_lr}")


def magenta_decay(optimizer: Optimizer, decay_rate: float = 0.9999, min_lr: float = 1e-5) -> LambdaLR:
    """Sketch-RNN's schedule: ``lr = (lr0 - min_lr) * decay_rate**step + min_lr``."""
    if not 0 < decay_rate <= 1:
        raise ValueError(f"decay_rate must be in (0, 1], got {decay_rate}")
    _check_lr(optimizer, min_lr)
    return LambdaLR(optimizer, [_Factor(g["lr"], "magenta", decay_rate=decay_rate, min_lr=min_lr)
                                for g in optimizer.param_groups])


def warmup_cosine(optimizer: Optimizer, total_steps: int, warmup_steps: int = 0, min_lr: float = 0.0) -> LambdaLR:
    """Linear warm-up, then cosine decay to ``min_lr`` at ``total_steps``."""
    _check_lr(optimizer, min_lr)
    return LambdaLR(optimizer, [_Factor(g["lr"], "cosine", warmup_steps=max(1, warmup_steps),
                                        total_steps=total_steps, min_lr=min_lr) for g in optimizer.param_groups])


def constant(optimizer: Optimizer) -> LambdaLR:
    """No schedule: the optimizer's lr throughout."""
    return LambdaLR(optimizer, [_Factor(g["lr"], "constant") for g in optimizer.param_groups])


def damped_cos2(optimizer: Optimizer, period: int = 100, epoch_steps: int = 1, floor: float = 1 / 50,
                decay: float = 4.0) -> LambdaLR:
    """The original SketchODE's ``annealing_policy`` (``fit_ae_oneseq.py``): a damped cos² with a floor.

    ``lr = lr0 · ((1 - floor) · exp(-γ·w) · cos²(w) + floor)`` with ``w = π·e / (2·period)`` and
    ``γ = ln(decay) / π``, ``e`` the epoch: the lr falls to ``floor·lr0`` at epoch ``period``, climbs back
    to a peak ``decay`` times lower at ``2·period``, and so on. The original stepped its ``LambdaLR`` once
    per epoch (Lightning's default interval); here ``e = step // epoch_steps``, so set ``epoch_steps`` to
    the training set's batches per epoch to match it (1: the same curve over steps).
    """
    if period < 1 or epoch_steps < 1:
        raise ValueError(f"period and epoch_steps must be >= 1, got {period}, {epoch_steps}")
    if not 0 <= floor <= 1 or decay < 1:
        raise ValueError(f"need 0 <= floor <= 1 and decay >= 1, got {floor}, {decay}")
    _check_lr(optimizer, 0.0)
    return LambdaLR(optimizer, [_Factor(g["lr"], "damped_cos2", period=period, epoch_steps=epoch_steps, floor=floor,
                                        decay=decay) for g in optimizer.param_groups])
