"""SketchODE's decoder: a latent-conditioned ODE whose solution is read out as ``(x, y, pen logit)``.

As the original's ``ODEOneSeqDecoder`` with ``ODEDynamics2ndOrder``: the latent code sets the initial
state through a linear map; the second-order dynamics keep a "position" and a "velocity" (each
``n_hidden`` wide) with ``d position/dt = velocity`` and ``d velocity/dt = MLP([velocity, z, t])``; the
first-order variant has ``dh/dt = MLP([h, z, t])``. The MLP has periodic activations (frequency ω) and
sees time only when ``time_dependent``. A linear read-out maps the position part (the first
``n_hidden`` entries of the state, as the original's observation model) to the output channels.

The latent code rides along in the ODE state with zero derivative, as in the original: the adjoint
method then returns its gradient with the initial state's.

For the original's CNF term (``model/cnf.py``), :meth:`ODEDecoder.forward_with_logp` appends a
log-density channel to the state with ``d log p/dt = -tr(∂f/∂state)``, the exact trace of the vector
field's Jacobian in the evolving state (``tr(∂ acceleration/∂ velocity)`` for order 2, the position
block adding nothing; the latent code is not part of the density's space, as in the original).
Without it the solve is exactly the plain one.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torchdiffeq
from torch import Tensor, nn

from sketchlab.models.sketch_ode.fused import fused_ode, fused_supported
from sketchlab.models.sketch_ode.periodic import PeriodicActivation, PeriodicMLP
from sketchlab.models.sketch_ode.solvers import SolverConfig, TimePlan, integrate_fixed, states_at_times

ORDERS = (1, 2)


class ODEDynamics(nn.Module):
    """Vector field of the state ``[position, velocity, z]`` (order 2) or ``[h, z]`` (order 1).

    Counts its evaluations in ``nfe``."""

    def __init__(self, order: int, n_hidden: int, z_size: int, arch: Sequence[int], omega: float,
                 learn_omega: bool, activation: str, time_dependent: bool) -> None:
        super().__init__()
        if order not in ORDERS:
            raise ValueError(f"order must be 1 or 2, got {order}")
        self.order, self.n_hidden, self.z_size = order, n_hidden, z_size
        self.time_dependent = time_dependent
        self.net = PeriodicMLP(n_hidden + z_size + int(time_dependent), n_hidden, arch, omega, learn_omega, activation)
        self.nfe = 0

    def activations(self) -> list[PeriodicActivation]:
        return self.net.activations()

    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        if not torch.compiler.is_compiling():
            self.nfe += 1
        h = self.n_hidden
        driver = y[..., h:2 * h] if self.order == 2 else y[..., :h]  # velocity, or the state itself
        z = y[..., self.order * h:]
        inputs = [driver, z]
        if self.time_dependent:
            inputs.append(torch.as_tensor(t, dtype=y.dtype, device=y.device).expand(*y.shape[:-1], 1))
        change = self.net(torch.cat(inputs, dim=-1)).to(y.dtype)
        parts = ([driver] if self.order == 2 else []) + [change, torch.zeros_like(z)]
        return torch.cat(parts, dim=-1)

    def forward_with_logp(self, t: Tensor, y: Tensor) -> Tensor:
        """The field on ``[state, z, log p]``: as :meth:`forward`, plus ``d log p/dt = -tr(∂f/∂state)``."""
        if not torch.compiler.is_compiling():
            self.nfe += 1
        h = self.n_hidden
        driver = y[..., h:2 * h] if self.order == 2 else y[..., :h]
        z = y[..., self.order * h:-1]
        inputs = [driver, z]
        if self.time_dependent:
            inputs.append(torch.as_tensor(t, dtype=y.dtype, device=y.device).expand(*y.shape[:-1], 1))
        change, trace = self.net.forward_with_trace(torch.cat(inputs, dim=-1), h)
        parts = ([driver] if self.order == 2 else []) + [change.to(y.dtype), torch.zeros_like(z),
                                                          -trace.to(y.dtype).unsqueeze(-1)]
        return torch.cat(parts, dim=-1)


class LogDensityField(nn.Module):
    """``dynamics.forward_with_logp`` as a torchdiffeq vector field (its parameters are the dynamics'),
    built per solve so the decoder's registered modules and state dict stay as they are."""

    def __init__(self, dynamics: ODEDynamics) -> None:
        super().__init__()
        self.dynamics = dynamics

    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        return self.dynamics.forward_with_logp(t, y)


class ODEDecoder(nn.Module):
    """Latent (B, z) → outputs (B, N, n_outputs) at times (N,)."""

    def __init__(self, n_outputs: int = 3, n_hidden: int = 64, z_size: int = 48, order: int = 2,
                 arch: Sequence[int] = (32, 32), omega: float = 3.0, learn_omega: bool = False,
                 activation: str = "cos", time_dependent: bool = True) -> None:
        super().__init__()
        self.n_hidden = n_hidden
        self.initial = nn.Linear(z_size, order * n_hidden)
        self.dynamics = ODEDynamics(order, n_hidden, z_size, arch, omega, learn_omega, activation, time_dependent)
        self.readout = nn.Linear(n_hidden, n_outputs)

    def states(self, z: Tensor, times: Tensor, solver: SolverConfig, plan: TimePlan | None = None,
               logp: bool = False, init: Tensor | None = None) -> Tensor:
        """The ODE state at each time, (N, B, order · hidden + z), from ``init`` (B, order · hidden)
        (default: the linear map of ``z``), with a last log-density column if ``logp``."""
        init = self.initial(z) if init is None else init
        if solver.fast and solver.fused and not logp and plan is not None and fused_supported(self.dynamics.net, z):
            # the latent code stays out of the fused solve's state (its slope is 0); appended after, as the loop has it
            dyn = self.dynamics
            dyn.nfe += plan.stage_times.numel()
            grid = fused_ode(dyn.net, init.to(z.dtype), z, plan, solver.method, dyn.order, dyn.n_hidden,
                             dyn.time_dependent)
            states = states_at_times(grid, plan)
            return torch.cat([states, z.expand(len(states), *z.shape)], dim=-1)
        parts = [init.to(z.dtype), z]
        if logp:
            parts.append(z.new_zeros(*z.shape[:-1], 1))
        y0 = torch.cat(parts, dim=-1)
        field = LogDensityField(self.dynamics) if logp else self.dynamics
        if solver.fast:
            if plan is None:
                raise ValueError("the fast backend needs a TimePlan")
            return integrate_fixed(lambda step, stage, t, y: field(t, y), y0, plan, solver.method)
        odeint = torchdiffeq.odeint_adjoint if (solver.adjoint and torch.is_grad_enabled()) else torchdiffeq.odeint
        return odeint(field, y0, times.to(y0.dtype), **solver.torchdiffeq_kwargs())

    def forward(self, z: Tensor, times: Tensor, solver: SolverConfig, plan: TimePlan | None = None) -> Tensor:
        position = self.states(z, times, solver, plan)[..., :self.n_hidden]
        return self.readout(position).transpose(0, 1)

    def forward_with_logp(self, z: Tensor, times: Tensor, solver: SolverConfig,
                          plan: TimePlan | None = None) -> tuple[Tensor, Tensor]:
        """Outputs (B, N, n_outputs) as :meth:`forward`, and the trajectory's log-density change
        ``log p(t) - log p(0) = -∫_0^t tr(∂f/∂state) ds`` at each time, (B, N)."""
        states = self.states(z, times, solver, plan, logp=True)
        return self.readout(states[..., :self.n_hidden]).transpose(0, 1), states[..., -1].transpose(0, 1)
