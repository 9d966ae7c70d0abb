"""How SketchODE solves its differential equations: torchdiffeq (optionally adjoint) or a lean fixed-step loop.

The original solves every ODE/CDE with ``torchdiffeq`` and back-propagates with the adjoint method.
With a fixed-step solver the same numbers come out of a plain Python loop of Runge-Kutta stages
that autograd differentiates directly (the "fast" backend): no adjoint re-solve, no per-step
bookkeeping of torchdiffeq, the spline derivatives of the CDE precomputed for every stage, and a
loop whose shapes never change, so that it can be captured in a CUDA graph.

:class:`SolverConfig` is what the model config says; :class:`TimePlan` is the solver grid for one
set of output times, built as torchdiffeq builds it (including its ``step_size`` grid and the
linear interpolation onto the output times), so the fast backend reproduces torchdiffeq's solution.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from torchdiffeq._impl.odeint import SOLVERS
from torchdiffeq._impl.solvers import FixedGridODESolver

BACKENDS = ("auto", "fast", "torchdiffeq")

#: Explicit Runge-Kutta tableaus ``(c, a, b)`` of torchdiffeq's fixed-grid methods the fast backend runs.
#: ``rk4`` is torchdiffeq's: the 3/8 rule (``rk4_alt_step_func``), not the classic RK4.
TABLEAUS: dict[str, tuple[tuple[float, ...], tuple[tuple[float, ...], ...], tuple[float, ...]]] = {
    "euler": ((0.0,), ((),), (1.0,)),
    "midpoint": ((0.0, 0.5), ((), (0.5,)), (0.0, 1.0)),
    "heun2": ((0.0, 1.0), ((), (1.0,)), (0.5, 0.5)),
    "heun3": ((0.0, 1 / 3, 2 / 3), ((), (1 / 3,), (0.0, 2 / 3)), (0.25, 0.0, 0.75)),
    "rk4": ((0.0, 1 / 3, 2 / 3, 1.0), ((), (1 / 3,), (-1 / 3, 1.0), (1.0, -1.0, 1.0)), (0.125, 0.375, 0.375, 0.125)),
}

#: ``stage_field(step, stage, t, y) -> dy/dt``: a vector field that may also look up per-stage data.
StageField = Callable[[int, int, Tensor, Tensor], Tensor]


def torchdiffeq_methods() -> list[str]:
    """The solver names torchdiffeq accepts."""
    return sorted(SOLVERS)


def is_fixed_grid(method: str) -> bool:
    """Whether torchdiffeq's ``method`` steps on a fixed grid (takes ``step_size``) rather than adapting."""
    return issubclass(SOLVERS[method], FixedGridODESolver)


@dataclass
class SolverConfig:
    """Which solver, with which settings, on which backend.

    Args:
        method: any torchdiffeq method (``rk4`` is the original's).
        step_size: fixed-grid step; None steps exactly on the output times (the original's choice of
            ``min(diff(t))`` on its uniform grids).
        rtol, atol: tolerances of adaptive methods (dopri5, ...).
        options: extra torchdiffeq ``options`` (e.g. ``{"max_num_steps": 1000}`` or ``{"interp": "cubic"}``).
        adjoint: back-propagate with the adjoint method (``odeint_adjoint``/``cdeint(adjoint=True)``,
            as the original); only on the torchdiffeq backend.
        backend: ``torchdiffeq``, ``fast`` (the fixed-step loop of this module; methods in
            :data:`TABLEAUS`, no adjoint, no extra options) or ``auto`` (fast when it can, else torchdiffeq).
        fused: on the fast backend, run each solve whose field allows it as one autograd Function with a
            hand-written backward (:mod:`sketchlab.models.sketch_ode.fused`; CPU); False keeps the plain loop.
    """

    method: str = "rk4"
    step_size: float | None = None
    rtol: float = 1e-4
    atol: float = 1e-6
    options: Mapping[str, Any] | None = None
    adjoint: bool = False
    backend: str = "auto"
    fused: bool = True
    fast: bool = field(init=False)

    def __post_init__(self) -> None:
        if self.method not in SOLVERS:
            raise ValueError(f"unknown ODE solver method '{self.method}'; torchdiffeq's methods are: "
                             f"{', '.join(torchdiffeq_methods())}")
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown solver backend '{self.backend}'; choose one of {', '.join(BACKENDS)}")
        if self.step_size is not None:
            if self.step_size <= 0:
                raise ValueError(f"step_size must be positive, got {self.step_size}")
            if not is_fixed_grid(self.method):
                raise ValueError(f"step_size is for fixed-grid methods; '{self.method}' adapts its steps "
                                 f"(set rtol/atol instead)")
        if self.rtol <= 0 or self.atol <= 0:
            raise ValueError(f"rtol and atol must be positive, got {self.rtol}, {self.atol}")
        self.options = dict(self.options or {})
        fast_possible = self.method in TABLEAUS and not self.adjoint and not self.options
        if self.backend == "fast" and not fast_possible:
            raise ValueError(f"backend 'fast' runs the fixed-step methods {', '.join(TABLEAUS)} without adjoint and "
                             f"without extra options; got method='{self.method}', adjoint={self.adjoint}, "
                             f"options={self.options}. Use backend 'torchdiffeq' (or 'auto').")
        self.fast = self.backend == "fast" or (self.backend == "auto" and fast_possible)

    def torchdiffeq_kwargs(self) -> dict[str, Any]:
        """``method``/``rtol``/``atol``/``options`` for ``torchdiffeq.odeint`` (and ``torchcde.cdeint``)."""
        options = dict(self.options)
        if self.step_size is not None:
            options["step_size"] = self.step_size
        return {"method": self.method, "rtol": self.rtol, "atol": self.atol, "options": options}


@dataclass
class TimePlan:
    """A fixed-step solve over given output times, laid out in advance.

    ``grid`` are the solver's step boundaries (torchdiffeq's grid: the output times themselves, or
    ``t0 + k·step_size`` with the last one set to the final time); ``stage_times[k, i]`` the time of
    stage ``i`` of step ``k`` (the last stage of a step with ``c = 1`` is exactly the step's end, as in
    torchdiffeq); ``out_index``/``out_weight`` map grid states to output states by torchdiffeq's
    linear interpolation (weight 0 where an output time is a grid time).
    """

    times: Tensor
    grid: Tensor
    steps: list[float]
    stage_times: Tensor
    out_index: Tensor
    out_weight: Tensor
    on_grid: bool

    @property
    def n_steps(self) -> int:
        return len(self.steps)

    @staticmethod
    def build(times: Tensor, method: str, step_size: float | None = None) -> TimePlan:
        if method not in TABLEAUS:
            raise ValueError(f"the fast backend runs {', '.join(TABLEAUS)}, not '{method}'")
        device = times.device
        t = times.detach().cpu()
        if t.ndim != 1 or len(t) < 2:
            raise ValueError(f"times must be a 1-D tensor of at least 2 points, got shape {tuple(t.shape)}")
        if not bool((t[1:] > t[:-1]).all()):
            raise ValueError("times must be strictly increasing")
        if step_size is None:
            grid = t.clone()
        else:  # torchdiffeq's _grid_constructor_from_step_size
            n = int(torch.ceil((t[-1] - t[0]) / step_size + 1).item())
            grid = torch.arange(0, n, dtype=t.dtype) * step_size + t[0]
            grid[-1] = t[-1]
        c = TABLEAUS[method][0]
        t0, t1 = grid[:-1], grid[1:]
        dt = t1 - t0
        stage_times = torch.stack([t1 if ci == 1.0 else t0 + dt * ci for ci in c], dim=1)
        index, weight = [0], [0.0]
        j = 1
        for k in range(len(grid) - 1):  # torchdiffeq's FixedGridODESolver.integrate
            while j < len(t) and grid[k + 1] >= t[j]:
                if t[j] == grid[k]:
                    index.append(k), weight.append(0.0)
                elif t[j] == grid[k + 1]:
                    index.append(k + 1), weight.append(0.0)
                else:
                    index.append(k), weight.append(float((t[j] - grid[k]) / (grid[k + 1] - grid[k])))
                j += 1
        return TimePlan(times=times, grid=grid.to(device), steps=[float(h) for h in dt],
                        stage_times=stage_times.to(device), out_index=torch.tensor(index, device=device),
                        out_weight=torch.tensor(weight, dtype=t.dtype, device=device),
                        on_grid=all(w == 0.0 for w in weight))


def integrate_fixed(stage_field: StageField, y0: Tensor, plan: TimePlan, method: str) -> Tensor:
    """Solve ``dy/dt = f`` from ``y0`` over ``plan`` with the explicit Runge-Kutta ``method``.

    Returns the states at ``plan.times`` as (len(times), *y0.shape), like ``torchdiffeq.odeint``.
    Plain autograd differentiates through the loop.
    """
    _, a, b = TABLEAUS[method]
    y = y0
    states = [y0]
    for k, h in enumerate(plan.steps):
        slopes: list[Tensor] = []
        for i, row in enumerate(a):
            y_stage = y
            for coef, slope in zip(row, slopes):
                if coef != 0.0:  # add(alpha=) is one op forward and backward: these loops are overhead-bound
                    y_stage = torch.add(y_stage, slope, alpha=h * coef)
            slopes.append(stage_field(k, i, plan.stage_times[k, i], y_stage))
        for coef, slope in zip(b, slopes):
            if coef != 0.0:
                y = torch.add(y, slope, alpha=h * coef)
        states.append(y)
    return states_at_times(torch.stack(states), plan)


def states_at_times(grid_states: Tensor, plan: TimePlan) -> Tensor:
    """The states at ``plan.times`` (len(times), ...) from those at the grid's step boundaries, by torchdiffeq's
    linear interpolation where an output time falls between them."""
    if plan.on_grid:
        return grid_states if len(plan.out_index) == len(grid_states) else grid_states[plan.out_index]
    lo = grid_states[plan.out_index]
    hi = grid_states[(plan.out_index + 1).clamp(max=len(grid_states) - 1)]
    weight = plan.out_weight.to(lo.dtype).view(-1, *([1] * (grid_states.ndim - 1)))
    return lo + weight * (hi - lo)
