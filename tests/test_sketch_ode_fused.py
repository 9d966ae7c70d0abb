"""The fused fixed-step solves (sketch_ode/fused.py) against the plain autograd loop they replace."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sketchlab.data.curves import CurveCollate
from sketchlab.data.strokes import from_polylines
from sketchlab.data.strokewise import StrokewiseCollate
from sketchlab.models.sketch_ode import SketchODE, fused
from sketchlab.models.sketch_ode.strokewise import StrokewiseSketchODE

SMALL = dict(n_hidden=8, z_size=4, enc_arch=(8, 6), dec_arch=(8, 6), n_points=12)


def toy_sketches(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [from_polylines([rng.normal(size=(int(rng.integers(3, 8)), 2)) + 3 * k for k in range(n)])
            for n in (1, 3, 2)]


def double(batch: dict) -> dict:
    return {k: (v.double() if v.is_floating_point() else v) for k, v in batch.items()}


def loss_and_grads(model: torch.nn.Module, batch: dict, fused_on: bool) -> tuple[torch.Tensor, dict]:
    model.solver.fused = fused_on
    model.zero_grad()
    torch.manual_seed(1)  # the VAE's draw
    loss = model.loss(batch)["loss"]
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def count_fused(monkeypatch) -> list[int]:
    calls = [0]
    apply = fused._FusedSolve.apply

    def counted(*args):
        calls[0] += 1
        return apply(*args)

    monkeypatch.setattr(fused._FusedSolve, "apply", counted)
    return calls


def assert_same(a: tuple, b: tuple, rtol: float) -> None:
    assert a[1].keys() == b[1].keys()
    for name in a[1]:
        torch.testing.assert_close(a[1][name], b[1][name], rtol=rtol, atol=rtol * float(b[1][name].abs().max()),
                                   msg=name)


@pytest.mark.parametrize("kw", [
    dict(), dict(order=1), dict(time_dependent=False, vae=True), dict(method="euler"),
    dict(method="midpoint", step_size=0.3), dict(method="heun3", activation="sin", enc_arch=(), dec_arch=(8,)),
])
def test_fused_equals_the_loop_in_float64(kw, monkeypatch):
    torch.manual_seed(0)
    model = SketchODE(**{**SMALL, **kw}).double()
    batch = double(CurveCollate(n_points=12)(toy_sketches()))
    calls = count_fused(monkeypatch)
    fused_run = loss_and_grads(model, batch, True)
    assert calls[0] == 2  # encoder and decoder
    loop = loss_and_grads(model, batch, False)
    assert calls[0] == 2
    torch.testing.assert_close(fused_run[0], loop[0], rtol=1e-13, atol=0)
    assert_same(fused_run, loop, rtol=1e-10)


def test_fused_forward_is_the_loops_in_float32():
    """Same ops in the same order: the loss is bit for bit the loop's; gradients agree to float32 rounding."""
    torch.manual_seed(0)
    model = SketchODE(**SMALL)
    batch = CurveCollate(n_points=12)(toy_sketches())
    fused_run, loop = loss_and_grads(model, batch, True), loss_and_grads(model, batch, False)
    assert float(fused_run[0]) == float(loop[0])
    assert_same(fused_run, loop, rtol=1e-4)
    z = torch.randn(2, SMALL["z_size"])
    with torch.no_grad(), model.frequency(1.5):  # a test-time frequency reaches the fused solve too
        model.solver.fused = True
        a = model.decode_curves(z, model.time_grid(20))
        model.solver.fused = False
        b = model.decode_curves(z, model.time_grid(20))
    assert torch.equal(a, b)


def test_strokewise_model_runs_fused_with_carried_states(monkeypatch):
    """The strokewise model hands states between solves (z0 and init that need gradients)."""
    torch.manual_seed(0)
    model = StrokewiseSketchODE(**{**SMALL, "n_points": 8}).double()
    batch = double(StrokewiseCollate(n_points=8)(toy_sketches()))
    calls = count_fused(monkeypatch)
    fused_run = loss_and_grads(model, batch, True)
    assert calls[0] > 2
    loop = loss_and_grads(model, batch, False)
    torch.testing.assert_close(fused_run[0], loop[0], rtol=1e-13, atol=0)
    assert_same(fused_run, loop, rtol=1e-10)


def test_what_the_fused_solve_leaves_to_the_loop(monkeypatch):
    calls = count_fused(monkeypatch)
    batch = CurveCollate(n_points=12)(toy_sketches())
    torch.manual_seed(0)
    SketchODE(**SMALL, learn_omega=True).loss(batch)["loss"].backward()  # learned frequencies
    SketchODE(**SMALL, cnf=True, kl_start=0, kl_end=0).loss(batch)  # the decoder's log-density solve
    with torch.autocast("cpu", dtype=torch.bfloat16):
        SketchODE(**SMALL).loss(batch)
    assert calls[0] == 1  # only the encoder of the CNF model
