"""Paths through a latent space: linear and spherical interpolation between codes."""

from __future__ import annotations

import torch


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation between rows of ``a`` and ``b`` (linear when they are parallel)."""
    a_n, b_n = a / a.norm(dim=-1, keepdim=True), b / b.norm(dim=-1, keepdim=True)
    omega = torch.arccos((a_n * b_n).sum(-1, keepdim=True).clamp(-1 + 1e-7, 1 - 1e-7))
    so = torch.sin(omega)
    t = t.reshape(-1, 1)
    linear = (1 - t) * a + t * b
    spherical = torch.sin((1 - t) * omega) / so * a + torch.sin(t * omega) / so * b
    return torch.where(so.abs() < 1e-6, linear, spherical)


def latent_path(z_a: torch.Tensor, z_b: torch.Tensor, steps: int, method: str = "slerp") -> torch.Tensor:
    """``steps`` latent codes from ``z_a`` to ``z_b`` inclusive (each (z,)), as a (steps, z) tensor."""
    if steps < 2:
        raise ValueError(f"an interpolation needs at least 2 steps, got {steps}")
    t = torch.linspace(0, 1, steps, device=z_a.device, dtype=z_a.dtype)
    if method == "lerp":
        return (1 - t)[:, None] * z_a + t[:, None] * z_b
    if method == "slerp":
        path = slerp(z_a.expand(steps, -1), z_b.expand(steps, -1), t)
        path[0], path[-1] = z_a, z_b  # exact endpoints despite rounding in sin/arccos
        return path
    raise ValueError(f"unknown interpolation method '{method}'; choose slerp or lerp")
