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

    def value_and_slope(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``fn(ω·x)`` and its derivative in ``x`` (``-ω sin(ω·x)`` for cos, ``ω cos(ω·x)`` for sin)."""
        omega = self.omega
        wx = omega * x
        if self.fn_name == "cos":
            return torch.cos(wx), -omega * torch.sin(wx)
        return torch.sin(wx), omega * torch.cos(wx)

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

    def forward_with_trace(self, x: Tensor, n: int) -> tuple[Tensor, Tensor]:
        """The output (..., out) and the exact trace of its Jacobian in the first ``n`` inputs (...,).

        Needs ``out == n`` (a square block). The Jacobian is ``W_L D_{L-1} W_{L-1} … D_1 W_1[:, :n]`` with
        ``D_k`` the diagonal of activation slopes, and by the cyclic property its trace is that of
        ``D_{L-1} W_{L-1} … D_1 C`` with ``C = W_1[:, :n] W_L``: per sample, one weighted sum over the first
        two hidden layers (``Σ_jk d2_j W2_jk d1_k C_kj``) and a small matrix product for each deeper one,
        instead of ``n`` backward passes. Differentiable, so it can be trained through.
        """
        linears = [m for m in self if isinstance(m, nn.Linear)]
        if linears[-1].out_features != n or n > linears[0].in_features:
            raise ValueError(f"the trace needs a square block: {n} inputs, {linears[-1].out_features} outputs")
        slopes = []
        h = x
        for linear, activation in zip(linears[:-1], self.activations()):
            h, slope = activation.value_and_slope(linear(h))
            slopes.append(slope)
        out = linears[-1](h)
        w_in = linears[0].weight[:, :n]
        if not slopes:  # a linear field: constant trace
            return out, w_in.diagonal().sum().expand(out.shape[:-1])
        c = w_in @ linears[-1].weight  # (first hidden, last hidden)
        if len(slopes) == 1:
            return out, (slopes[0] * c.diagonal()).sum(-1)
        if len(slopes) == 2:  # Σ_k d1_k Σ_j d2_j (W2 ∘ Cᵀ)_jk
            return out, ((slopes[1] @ (linears[1].weight * c.T)) * slopes[0]).sum(-1)
        # deeper: carry the (hidden, last hidden) product D_k W_k … D_1 C per sample
        m = slopes[1].unsqueeze(-1) * (linears[1].weight @ (slopes[0].unsqueeze(-1) * c))
        for linear, slope in zip(linears[2:-1], slopes[2:]):
            m = slope.unsqueeze(-1) * (linear.weight @ m)
        return out, m.diagonal(dim1=-2, dim2=-1).sum(-1)
