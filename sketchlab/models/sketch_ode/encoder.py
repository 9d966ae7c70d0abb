"""SketchODE's encoder: a Neural CDE driven by the natural cubic spline of ``[x, y, pen, t]``.

As the original's ``CDEOneSeqEncoder``: the hidden state starts at zero, evolves by
``dz = f(z) dX(t)`` with ``f`` a periodic MLP (hidden → hidden × channels, no output squashing),
and the hidden path is max-pooled over time before a linear map to the latent code (or to a mean and
log-variance for the VAE).

The spline is built on the curve's real times and evaluated on them. The original computed the
coefficients on index time (``natural_cubic_coeffs(x)``, knots 0, 1, 2, ...) but then built the spline
with the real times ``t`` (spacing 5/99), which evaluates each piece's index-time polynomial at a
real-time offset: the control's derivative comes out at roughly ``dt`` times its size and from the
left end of each piece. ``spline_index_time=True`` reproduces that.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torchcde
from torch import Tensor, nn

from sketchlab.models.sketch_ode.fused import fused_cde, fused_supported
from sketchlab.models.sketch_ode.periodic import PeriodicMLP
from sketchlab.models.sketch_ode.solvers import SolverConfig, TimePlan, integrate_fixed, states_at_times


class CDEVectorField(nn.Module):
    """``f(z)`` of ``dz = f(z) dX``: (..., hidden) → (..., hidden, channels). Counts its evaluations."""

    def __init__(self, n_channels: int, n_hidden: int, arch: Sequence[int], omega: float, learn_omega: bool,
                 activation: str) -> None:
        super().__init__()
        self.n_channels, self.n_hidden = n_channels, n_hidden
        self.net = PeriodicMLP(n_hidden, n_hidden * n_channels, arch, omega, learn_omega, activation)
        self.nfe = 0

    def forward(self, t: Tensor, z: Tensor) -> Tensor:
        if not torch.compiler.is_compiling():
            self.nfe += 1
        return self.net(z).view(*z.shape[:-1], self.n_hidden, self.n_channels)


def _spline(path: Tensor, times: Tensor, index_time: bool) -> torchcde.CubicSpline:
    coeffs = torchcde.natural_cubic_coeffs(path, t=None if index_time else times)
    return torchcde.CubicSpline(coeffs, t=times)


def spline_derivative_operator(times: Tensor, query: Tensor, index_time: bool = False) -> Tensor:
    """(Q, G) matrix ``D`` such that ``D @ X`` is the time derivative at ``query`` of torchcde's natural cubic
    spline through ``X`` (G, channels) at ``times``: the spline is linear in its knot values, so the
    derivatives of the G unit paths give the operator exactly."""
    basis = torch.eye(len(times), dtype=times.dtype, device=times.device).unsqueeze(-1)
    return _spline(basis, times, index_time).derivative(query)[..., 0].T.contiguous()


class CDEEncoder(nn.Module):
    """Curve (B, G, 3) at times (G,) → latent mean (B, z) and log-variance (B, z) or None."""

    def __init__(self, n_inputs: int = 3, n_hidden: int = 64, z_size: int = 48, arch: Sequence[int] = (32, 32),
                 omega: float = 3.0, learn_omega: bool = False, activation: str = "cos", vae: bool = False,
                 spline_index_time: bool = False) -> None:
        super().__init__()
        self.n_hidden = n_hidden
        self.spline_index_time = spline_index_time
        self.field = CDEVectorField(n_inputs + 1, n_hidden, arch, omega, learn_omega, activation)
        self.to_mean = nn.Linear(n_hidden, z_size)
        self.to_logvar = nn.Linear(n_hidden, z_size) if vae else None

    @staticmethod
    def control_path(curve: Tensor, times: Tensor) -> Tensor:
        """The CDE's control values: the curve's channels plus time, (B, G, channels + 1)."""
        return torch.cat([curve, times.to(curve.dtype).expand(curve.shape[0], -1).unsqueeze(-1)], dim=-1)

    def hidden_path(self, curve: Tensor, times: Tensor, solver: SolverConfig, plan: TimePlan | None = None,
                    derivative_operator: Tensor | None = None, z0: Tensor | None = None) -> Tensor:
        """The CDE's hidden state at each time, (B, G, hidden), from ``z0`` (B, hidden) (default: zeros).

        The fast backend needs ``plan`` and ``derivative_operator`` (:func:`spline_derivative_operator` at
        ``plan.stage_times``): the control's derivative at every stage is then one matrix product.
        """
        path = self.control_path(curve, times)
        if z0 is None:
            z0 = torch.zeros(curve.shape[0], self.n_hidden, dtype=path.dtype, device=path.device)
        if solver.fast:
            if plan is None or derivative_operator is None:
                raise ValueError("the fast backend needs a TimePlan and the spline derivative operator")
            n_steps, n_stages = plan.stage_times.shape
            control = torch.einsum("qg,bgc->bqc", derivative_operator.to(path.dtype), path)
            control = control.view(path.shape[0], n_steps, n_stages, path.shape[-1], 1)
            if (solver.fused and fused_supported(self.field.net, z0, control)
                    and not (control.requires_grad and torch.is_grad_enabled())):
                self.field.nfe += n_steps * n_stages
                grid = fused_cde(self.field.net, z0, control, plan, solver.method, self.n_hidden, path.shape[-1])
                return states_at_times(grid, plan).transpose(0, 1)

            def stage_field(step: int, stage: int, t: Tensor, z: Tensor) -> Tensor:
                return (self.field(t, z) @ control[:, step, stage]).squeeze(-1)

            return integrate_fixed(stage_field, z0, plan, solver.method).transpose(0, 1)
        spline = _spline(path, times, self.spline_index_time)
        return torchcde.cdeint(X=spline, func=self.field, z0=z0, t=times,
                               adjoint=solver.adjoint and torch.is_grad_enabled(), **solver.torchdiffeq_kwargs())

    def forward(self, curve: Tensor, times: Tensor, solver: SolverConfig, plan: TimePlan | None = None,
                derivative_operator: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        pooled = self.hidden_path(curve, times, solver, plan, derivative_operator).amax(dim=1)
        return self.to_mean(pooled), (self.to_logvar(pooled) if self.to_logvar is not None else None)
