"""MLPs with periodic activations ``cos(ω·x)`` (or ``sin``), SketchODE's family of vector fields.

The frequency ω is either fixed (the paper's default, ω = 3) or learned per layer as
``sigmoid(p) · ω_max`` (the original's ``learn_freq``, with ``p`` initialised to 1). At test time a
frequency *override* changes the dynamics without retraining, the paper's "abstraction" knob: the
override is the ω to use, and learned frequencies are scaled by ``override / ω_max`` so that one
number means the same thing for both kinds of layer.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

ACTIVATIONS = {"cos": torch.cos, "sin": torch.sin}


class PeriodicActivation(nn.Module):
    """``fn(ω · x)`` with ``fn`` cos or sin and ω fixed or learned (bounded by ``omega``)."""

    def __init__(self, omega: float = 3.0, learnable: bool = False, fn: str = "cos") -> None:
        super().__init__()
        if fn not in ACTIVATIONS:
            raise ValueError(f"unknown periodic activation '{fn}'; choose one of {', '.join(ACTIVATIONS)}")
        if omega <= 0:
            raise ValueError(f"omega must be positive, got {omega}")
        self.fn_name = fn
        self._fn = ACTIVATIONS[fn]
        self.omega_max = float(omega)
        self.learnable = learnable
        # The original initialises the learned logit to 1 (so ω starts at sigmoid(1)·ω_max ≈ 0.73·ω_max).
        self.freq_logit = nn.Parameter(torch.tensor(1.0)) if learnable else None
        self.override: float | None = None

    @property
    def omega(self) -> Tensor | float:
        """The frequency in use: the learned or fixed one, or the override scaled as the module doc says."""
        scale = 1.0 if self.override is None else self.override / self.omega_max
        if self.freq_logit is None:
            return self.omega_max * scale
        return torch.sigmoid(self.freq_logit) * self.omega_max * scale

    def forward(self, x: Tensor) -> Tensor:
        return self._fn(self.omega * x)

    def extra_repr(self) -> str:
        return f"fn={self.fn_name}, omega={self.omega_max}, learnable={self.learnable}"


class PeriodicMLP(nn.Sequential):
    """``Linear → fn(ω·) → … → Linear``: one periodic activation after each hidden layer, linear output."""

    def __init__(self, in_features: int, out_features: int, hidden: Sequence[int], omega: float = 3.0,
                 learnable: bool = False, fn: str = "cos") -> None:
        layers: list[nn.Module] = []
        last = in_features
        for width in hidden:
            if width < 1:
                raise ValueError(f"hidden layer widths must be positive, got {list(hidden)}")
            layers += [nn.Linear(last, width), PeriodicActivation(omega, learnable, fn)]
            last = width
        layers.append(nn.Linear(last, out_features))
        super().__init__(*layers)

    def activations(self) -> list[PeriodicActivation]:
        return [m for m in self if isinstance(m, PeriodicActivation)]
