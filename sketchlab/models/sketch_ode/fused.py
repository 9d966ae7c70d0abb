"""The fast backend's fixed-step solves as one autograd Function each, with a hand-written backward.

The plain fast loop (:func:`~sketchlab.models.sketch_ode.solvers.integrate_fixed`) leaves autograd a chain
of small nodes per Runge-Kutta stage (slicing, concatenation, three linear layers, activations, stage
additions) on tensors so small that per-op overhead, not arithmetic, takes most of the time, and its
backward computes each weight's gradient with one small matrix product per stage. Here the forward
runs without building a graph and keeps each stage's layer inputs and activations; the backward is the
discrete adjoint of the Runge-Kutta scheme: per stage in reverse, the MLP's backward (one matrix product
and one product with the precomputed activation slope per layer) and the tableau's few additions. What
does not depend on the chain is batched over all stages: the activation slopes before it, every weight
and bias gradient (one product over all stages per layer) and the latent code's gradient after it.

The forward is the loop's arithmetic op for op (same ``addmm``, same ``ω · x`` then ``cos``, same stage
additions), so its values are the loop's; gradients agree to rounding (``tests/test_sketch_ode_fused.py``
checks both in float32 and float64). Fields it runs (see :func:`fused_supported`):

- the CDE encoder's ``dz = f(z) dX``: ``f`` a periodic MLP, the control's derivative per stage given;
- the decoder's dynamics, order 1 (``dh/dt = MLP([h, z, t])``) and 2 (``dp/dt = v``,
  ``dv/dt = MLP([v, z, t])``), with the latent code held out of the state (it never changes).

Not run here (the loop runs them): learned frequencies, autocast, the CNF log-density, a control path
that needs its own gradient, and devices other than the CPU (not measured there; on CUDA the loop can
be captured in CUDA graphs instead, ``cuda_graph=True``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from sketchlab.models.sketch_ode.periodic import PeriodicMLP
from sketchlab.models.sketch_ode.solvers import TABLEAUS, TimePlan

@dataclass(frozen=True)
class _Spec:
    """Everything about a solve that is not a tensor: the grid, the tableau, the field's shape."""

    kind: str              # cde | ode1 | ode2: what the first layer reads, how the output becomes the slope
    steps: tuple[float, ...]
    a: tuple[tuple[float, ...], ...]
    b: tuple[float, ...]
    omegas: tuple[float, ...]
    fns: tuple[str, ...]
    n_hidden: int          # the driver's width: the state (cde, ode1) or the velocity (ode2)
    n_channels: int        # cde: the control's channels


def fused_supported(net: PeriodicMLP, *tensors: Tensor | None) -> bool:
    """Whether :func:`fused_cde` / :func:`fused_ode` can run ``net`` on these tensors."""
    present = [t for t in tensors if t is not None]
    return (all(a.freq_logit is None for a in net.activations())
            and all(t.device.type == "cpu" and t.dtype in (torch.float32, torch.float64) for t in present)
            and len({t.dtype for t in present} | {p.dtype for p in net.parameters()}) == 1
            and not torch.is_autocast_enabled("cpu"))


def _spec(kind: str, net: PeriodicMLP, plan: TimePlan, method: str, n_hidden: int, n_channels: int = 0) -> _Spec:
    _, a, b = TABLEAUS[method]
    acts = net.activations()
    return _Spec(kind, tuple(plan.steps), a, b, tuple(float(x.omega) for x in acts), tuple(x.fn_name for x in acts),
                 n_hidden, n_channels)


def _params(net: PeriodicMLP) -> list[Tensor]:
    out = []
    for m in net:
        if isinstance(m, nn.Linear):
            out += [m.weight, m.bias]
    return out


class _FusedSolve(torch.autograd.Function):
    """Grid states ``(n_steps + 1, B, D)`` of one fixed-step solve; see the module docstring."""

    @staticmethod
    def forward(ctx, y0: Tensor, z: Tensor | None, control: Tensor | None, stage_times: Tensor | None,
                spec: _Spec, *params: Tensor) -> Tensor:
        weights, biases = params[0::2], params[1::2]
        n_layers = len(weights)
        batch = y0.shape[0]
        n = spec.n_hidden
        n_stages = len(spec.b)
        n_total = len(spec.steps) * n_stages
        ode = spec.kind != "cde"
        if ode:  # each stage's first-layer input is [driver, z, t]: the columns after the driver made once
            if stage_times is None:
                constant = [z] * n_total
            else:
                t_col = stage_times.reshape(-1, 1, 1).to(y0.dtype).expand(-1, batch, 1)
                constant = torch.cat([z.expand(n_total, *z.shape), t_col], dim=-1).unbind(0)
        # Each stage's first-layer input is a fresh tensor, as in the loop: MKL's GEMM rounds differently
        # for differently aligned operands, and a slice of one big buffer would change the forward's values.
        stage_inputs = []
        pres = [[] for _ in range(n_layers - 1)]  # ω · (pre-activation) per hidden layer and stage
        acts = [[] for _ in range(n_layers - 1)]
        weights_t = [w.t() for w in weights]
        y = y0
        states = [y0]
        s = 0
        for k, h in enumerate(spec.steps):
            slopes: list[Tensor] = []
            for i, row in enumerate(spec.a):
                y_stage = y
                for coef, slope in zip(row, slopes):
                    if coef != 0.0:
                        y_stage = torch.add(y_stage, slope, alpha=h * coef)
                if ode:
                    driver = y_stage[:, n:2 * n] if spec.kind == "ode2" else y_stage
                    x = torch.cat([driver, constant[s]], dim=-1)
                else:
                    x = y_stage
                stage_inputs.append(x)
                for layer in range(n_layers - 1):
                    wx = torch.addmm(biases[layer], x, weights_t[layer]).mul_(spec.omegas[layer])
                    x = torch.cos(wx) if spec.fns[layer] == "cos" else torch.sin(wx)
                    pres[layer].append(wx)
                    acts[layer].append(x)
                out = torch.addmm(biases[-1], x, weights_t[-1])
                if spec.kind == "cde":
                    slope = (out.view(batch, n, spec.n_channels) @ control[:, k, i]).squeeze(-1)
                elif spec.kind == "ode2":
                    slope = torch.cat([y_stage[:, n:2 * n], out], dim=-1)
                else:
                    slope = out
                slopes.append(slope)
                s += 1
            for coef, slope in zip(spec.b, slopes):
                if coef != 0.0:
                    y = torch.add(y, slope, alpha=h * coef)
            states.append(y)
        layer_inputs = [torch.stack(stage_inputs)] + [torch.stack(a) for a in acts]
        pre_all = [torch.stack(p) for p in pres]
        ctx.spec = spec
        ctx.z_size = 0 if z is None else z.shape[1]
        ctx.save_for_backward(control if control is not None else y0.new_empty(0), *pre_all, *layer_inputs,
                              *params)
        ctx.n_layers = n_layers
        return torch.stack(states)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_states: Tensor) -> tuple[Tensor | None, ...]:
        spec: _Spec = ctx.spec
        n_layers = ctx.n_layers
        saved = ctx.saved_tensors
        control = saved[0]
        pre_all = saved[1:n_layers]
        layer_inputs = saved[n_layers:2 * n_layers]
        params = saved[2 * n_layers:]
        weights, biases = params[0::2], params[1::2]
        n = spec.n_hidden
        n_stages = len(spec.b)
        n_total = len(spec.steps) * n_stages
        batch = grad_states.shape[1]
        # d activation / d pre-activation for every stage at once (ω folded in)
        slopes_all = []
        for wx, omega, fn in zip(pre_all, spec.omegas, spec.fns):
            slopes_all.append(torch.sin(wx).mul_(-omega) if fn == "cos" else torch.cos(wx).mul_(omega))
        slopes_t = [sl.unbind(0) for sl in slopes_all]
        w_first = weights[0][:, :n] if spec.kind != "cde" else weights[0]
        grad_pre = [[None] * n_total for _ in range(n_layers)]  # last entry: the output layer's
        ybar = grad_states[-1].clone()
        for k in reversed(range(len(spec.steps))):
            h = spec.steps[k]
            kbar: list[Tensor | None] = [ybar * (h * bi) if bi != 0.0 else None for bi in spec.b]
            for i in reversed(range(n_stages)):
                s = k * n_stages + i
                g = kbar[i]
                if g is None:
                    g = ybar.new_zeros(ybar.shape)
                if spec.kind == "cde":
                    out_grad = (g.unsqueeze(-1) * control[:, k, i].transpose(-1, -2)).view(batch, -1)
                elif spec.kind == "ode2":
                    out_grad = g[:, n:]
                else:
                    out_grad = g
                grad_pre[-1][s] = out_grad
                d = out_grad
                for layer in reversed(range(n_layers - 1)):
                    d = torch.mm(d, weights[layer + 1]).mul_(slopes_t[layer][s])
                    grad_pre[layer][s] = d
                dx = torch.mm(d, w_first)
                if spec.kind == "ode2":  # the position part of the stage state feeds nothing; the velocity
                    dx = dx.add_(g[:, :n])  # both the MLP and d position / dt
                    target = slice(n, 2 * n)
                else:
                    target = slice(None)
                for j, coef in enumerate(spec.a[i]):
                    if coef == 0.0:
                        continue
                    if kbar[j] is None:
                        kbar[j] = ybar.new_zeros(ybar.shape)
                    kbar[j][:, target].add_(dx, alpha=h * coef)
                ybar[:, target].add_(dx)
            ybar.add_(grad_states[k])
        grads: list[Tensor | None] = []
        grad_z = None
        for layer in range(n_layers):
            gp = torch.stack(grad_pre[layer])  # (stages, B, width)
            if layer == 0 and ctx.z_size and ctx.needs_input_grad[1]:  # z: a column block of every first-layer input
                grad_z = gp.sum(0) @ weights[0][:, n:n + ctx.z_size]
            gp = gp.flatten(0, 1)
            grads += [gp.t() @ layer_inputs[layer].flatten(0, 1), gp.sum(0)]
        return (ybar, grad_z, None, None, None, *grads)


def fused_cde(net: PeriodicMLP, z0: Tensor, control: Tensor, plan: TimePlan, method: str, n_hidden: int,
              n_channels: int) -> Tensor:
    """Grid states (n_steps + 1, B, hidden) of ``dz = net(z).view(hidden, channels) @ control`` from ``z0``.

    ``control`` (B, n_steps, n_stages, channels, 1) is the control's derivative at every stage."""
    spec = _spec("cde", net, plan, method, n_hidden, n_channels)
    return _FusedSolve.apply(z0, None, control, None, spec, *_params(net))


def fused_ode(net: PeriodicMLP, y0: Tensor, z: Tensor, plan: TimePlan, method: str, order: int,
              n_hidden: int, time_dependent: bool) -> Tensor:
    """Grid states (n_steps + 1, B, order · hidden) of the decoder's dynamics from ``y0``, conditioned on ``z``."""
    spec = _spec(f"ode{order}", net, plan, method, n_hidden)
    times = plan.stage_times if time_dependent else None
    return _FusedSolve.apply(y0, z, None, times, spec, *_params(net))
