"""The original SketchODE's recipe as options: the CNF term, index-time resampling, the 2-D Perlin jitter,
the damped cos² schedule, the random split, and the ``vmnist_ode_original`` experiment."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torchdiffeq
from hydra import compose, initialize_config_dir

from helpers import train_steps

from sketchlab.config import config_dir
from sketchlab.data.curves import ORIGINAL_JOIN_POINTS, CurveCollate, stroke3_to_curve
from sketchlab.data.perlin import PerlinOriginalAugment, pnoise2
from sketchlab.data.sources import PointsNpz
from sketchlab.data.strokes import from_polylines, points_to_stroke3, to_polylines
from sketchlab.engine.schedules import damped_cos2
from sketchlab.models.sketch_ode import SketchODE
from sketchlab.models.sketch_ode.periodic import PeriodicMLP
from sketchlab.registry import build

SMALL = dict(n_hidden=8, z_size=4, enc_arch=(8,), dec_arch=(8, 8), n_points=20)


def make(**kw) -> SketchODE:
    torch.manual_seed(0)
    return SketchODE(**{**SMALL, **kw})


def arcs_batch(n_points: int = 20, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """Single-stroke arcs: a smooth control path (the adjoint's error stays small)."""
    angles = np.linspace(0, 1.5 * np.pi, 40)
    arcs = [from_polylines([np.column_stack([rx * np.cos(angles), ry * np.sin(angles)])])
            for rx, ry in [(1, 1), (2, 1), (1, 3)]]
    return {k: v.to(dtype) for k, v in CurveCollate(n_points=n_points)(arcs).items()}


def loss_and_grads(model: SketchODE, batch, step: int = 0) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    model.zero_grad()
    out = model.loss(batch, step)
    out["loss"].backward()
    return ({k: float(v.detach()) for k, v in out.items()},
            {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None})


# -- CNF ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("arch", [(), (6,), (6, 5), (6, 5, 4)])
@pytest.mark.parametrize("fn,learn", [("cos", False), ("sin", True)])
def test_trace_is_the_exact_jacobian_trace(arch, fn, learn):
    torch.manual_seed(0)
    n = 5
    mlp = PeriodicMLP(n + 3, n, arch, 3.0, learn, fn).double()
    x = torch.randn(4, n + 3, dtype=torch.float64, requires_grad=True)
    out, trace = mlp.forward_with_trace(x, n)
    # the original's way (model/cnf.py: trace_jac_dynamics): one backward pass per dimension
    reference = sum(torch.autograd.grad(out[:, i].sum(), x, retain_graph=True)[0][:, i] for i in range(n))
    torch.testing.assert_close(out, mlp(x))
    torch.testing.assert_close(trace, reference, rtol=1e-12, atol=1e-12)
    for activation in mlp.activations():  # the abstraction knob changes the field, and so its trace
        activation.override = 1.5
    _, trace_at_omega = mlp.forward_with_trace(x, n)
    if arch:
        assert not torch.allclose(trace_at_omega, trace)


def test_cnf_off_is_the_plain_model_and_adds_no_parameters():
    batch = arcs_batch(dtype=torch.float64)
    plain, with_cnf = make().double(), make(cnf=True, kl_start=0, kl_end=0, kl_weight=0.5).double()
    assert list(plain.state_dict()) == list(with_cnf.state_dict())
    for a, b in zip(plain.parameters(), with_cnf.parameters()):
        assert torch.equal(a, b)
    off, _ = loss_and_grads(plain, batch, step=3)
    on, _ = loss_and_grads(with_cnf, batch, step=3)
    assert set(off) == {"loss", "recon_xy", "pen_bce"}
    # the log-density channel rides along without touching the trajectory (up to rounding: the state's rows
    # are one column wider, and the loss is taken in float32)
    assert on["recon_xy"] == pytest.approx(off["recon_xy"], rel=1e-6)
    assert on["pen_bce"] == pytest.approx(off["pen_bce"], rel=1e-6)
    assert on["cnf_weight"] == 0.5 and math.isfinite(on["cnf"])
    assert on["loss"] == pytest.approx(off["loss"] + 0.5 * on["cnf"], rel=1e-6)
    z = torch.randn(3, SMALL["z_size"], dtype=torch.float64)
    times = plain.time_grid().double()
    plan = plain._plan(times)[1]
    decoded, _ = with_cnf.decoder.forward_with_logp(z, times, with_cnf.solver, plan)
    torch.testing.assert_close(decoded, plain.decoder(z, times, plain.solver, plan), rtol=1e-13, atol=1e-13)


def test_cnf_log_density_is_minus_the_integrated_trace():
    """Independent of our solver and trace: dopri5 at tight tolerance on the original's autograd trace
    (our rk4 on a fine step that lands on every output time, so that both are accurate)."""
    model = make(cnf=True, step_size=0.025).double()
    z = torch.randn(3, SMALL["z_size"], dtype=torch.float64)
    times = torch.linspace(0, 5, 21, dtype=torch.float64)
    _, logp = model.decoder.forward_with_logp(z, times, model.solver, model._plan(times)[1])
    dynamics = model.decoder.dynamics

    def field(t, y):
        state = y[..., :-1]
        with torch.enable_grad():
            state = state.detach().requires_grad_(True)
            dy = dynamics(t, state)
            h = dynamics.n_hidden
            accel = dy[:, h:2 * h]
            trace = sum(torch.autograd.grad(accel[:, i].sum(), state, retain_graph=True)[0][:, h + i]
                        for i in range(h))
        return torch.cat([dy.detach(), -trace.detach().unsqueeze(-1)], dim=-1)

    y0 = torch.cat([model.decoder.initial(z), z, torch.zeros(3, 1, dtype=torch.float64)], dim=-1).detach()
    reference = torchdiffeq.odeint(field, y0, times, method="dopri5", rtol=1e-8, atol=1e-8)[..., -1].T
    torch.testing.assert_close(logp.detach(), reference, rtol=1e-5, atol=1e-6)
    assert float(logp.detach()[:, 0].abs().max()) == 0.0  # log p(0) - log p(0)


def test_cnf_runs_on_every_backend_with_the_same_numbers():
    batch = arcs_batch(dtype=torch.float64)
    kw = dict(cnf=True, kl_start=0, kl_end=0)
    fast = loss_and_grads(make(**kw).double(), batch)
    plain = loss_and_grads(make(backend="torchdiffeq", **kw).double(), batch)
    adjoint = loss_and_grads(make(adjoint=True, **kw).double(), batch)
    assert fast[0]["cnf"] == pytest.approx(plain[0]["cnf"], rel=1e-10)
    assert fast[0]["loss"] == pytest.approx(adjoint[0]["loss"], rel=1e-10)
    for name, grad in fast[1].items():
        torch.testing.assert_close(plain[1][name], grad, rtol=1e-8, atol=1e-10)
        # the adjoint's backward solve differs from backprop by its discretisation error only
        assert float((adjoint[1][name] - grad).norm()) <= 1e-3 * float(grad.norm()) + 1e-6, name


def test_cnf_follows_the_shared_weight_schedule():
    batch = arcs_batch()
    model = make(cnf=True, kl_weight=0.1, kl_start=10, kl_end=20)
    before = model.loss(batch, step=5)
    assert "cnf" not in before  # no log-density solve while its weight is 0, as the original
    ramp = {k: float(v.detach()) for k, v in model.loss(batch, step=15).items()}
    assert ramp["cnf_weight"] == pytest.approx(0.05)
    assert ramp["loss"] == pytest.approx(ramp["recon_xy"] + ramp["pen_bce"] + 0.05 * ramp["cnf"])
    model.eval()
    with torch.no_grad():
        evaluated = model.loss(batch, step=5)  # evaluation reports it, at weight 0
    assert float(evaluated["cnf_weight"]) == 0.0
    assert float(evaluated["loss"]) == pytest.approx(float(evaluated["recon_xy"] + evaluated["pen_bce"]))
    with_vae = make(cnf=True, vae=True, kl_start=0, kl_end=0)
    out = with_vae.loss(batch, step=1)
    assert {"kl", "cnf"} <= set(out) and float(out["kl_weight"]) == float(out["cnf_weight"]) == 1.0


def test_cnf_first_order_and_unsupported_combinations():
    out = make(cnf=True, order=1, kl_start=0, kl_end=0).loss(arcs_batch())
    assert torch.isfinite(out["cnf"])
    with pytest.raises(ValueError, match="cnf does not run in CUDA graphs"):
        make(cnf=True, cuda_graph=True)


# -- index-time resampling ------------------------------------------------------------------------

def test_index_resampling_is_uniform_in_point_index():
    """Unevenly spaced points: index time passes through every point at evenly spaced times, arc length does not."""
    x = np.arange(8.0) ** 2
    sketch = points_to_stroke3(np.column_stack([x, np.zeros(8), np.zeros(8)]))
    factor = 3
    index = stroke3_to_curve(sketch, n_points=7 * factor + 1, resample="index")
    knots = (x - x[0]) / (x[-1] - x[0])
    np.testing.assert_allclose(index.points[::factor, 0], knots, atol=1e-6)
    arclength = stroke3_to_curve(sketch, n_points=7 * factor + 1)
    np.testing.assert_allclose(np.diff(arclength.points[:, 0]), 1 / 21, atol=1e-6)  # constant speed instead
    assert not np.allclose(arclength.points[::factor, 0], knots, atol=1e-2)


def test_index_resampling_joins_strokes_with_the_originals_pen_up_points():
    first = np.column_stack([np.linspace(0, 1, 10), np.zeros(10)])
    second = np.column_stack([np.linspace(0, 1, 12), np.ones(12)])
    lonely = np.array([[5.0, 5.0]])  # one-point strokes are dropped, as the original's Sketch does
    sketch = from_polylines([first, lonely, second])
    n = 10 + (ORIGINAL_JOIN_POINTS - 2) + 12  # one sample per point of the original's sequence
    curve = stroke3_to_curve(sketch, n_points=n, resample="index")
    pen = curve.points[:, 2]
    assert pen.sum() == ORIGINAL_JOIN_POINTS - 2 and (pen[10:28] == 1).all()
    assert curve.scale == pytest.approx(math.sqrt(2))  # the radius without the dropped stroke
    batch = CurveCollate(n_points=25, resample="index")([sketch, points_to_stroke3(np.zeros((1, 3)))])
    assert batch["curve"].shape == (2, 25, 3) and torch.isfinite(batch["curve"]).all()
    with pytest.raises(ValueError, match="resample"):
        CurveCollate(resample="time")


# -- the original's Perlin jitter -----------------------------------------------------------------

def test_pnoise2_equals_the_noise_package_bit_for_bit():
    noise = pytest.importorskip("noise")
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.uniform(-1, 1, 300), rng.uniform(-30, 30, 300), rng.uniform(9990, 10010, 300)])
    y = np.concatenate([rng.uniform(-1, 1, 300), rng.uniform(-30, 30, 300), rng.uniform(9990, 10010, 300)])
    for kw in [{}, {"octaves": 3, "persistence": 0.7}, {"repeatx": 16.0, "repeaty": 8.0}]:
        ours = pnoise2(x, y, **kw)
        theirs = np.array([noise.pnoise2(a, b, **kw) for a, b in zip(x, y)])
        np.testing.assert_array_equal(ours.astype(np.float64), theirs)


def test_pnoise2_is_smooth_lattice_zero_gradient_noise():
    rng = np.random.default_rng(1)
    cells = rng.integers(-50, 50, size=(2, 200)).astype(float)
    np.testing.assert_array_equal(pnoise2(cells[0], cells[1]), 0.0)  # zero on the integer lattice
    x, y = rng.uniform(0, 64, (2, 20000))
    values = pnoise2(x, y)
    assert np.abs(values).max() <= 1.0 and values.std() > 0.1
    step = 1e-3  # Lipschitz: no jumps across cell boundaries
    assert np.abs(pnoise2(x + step, y) - values).max() < 5e-3
    np.testing.assert_allclose(pnoise2(x + 1024, y), values, atol=1e-3)  # the default repeat (float32 inputs)


def test_perlin_original_jitter_is_the_originals_continuous_noise():
    rng = np.random.default_rng(0)
    t = np.linspace(0, 2 * np.pi, 30)
    sketch = from_polylines([np.column_stack([4 + 3 * np.cos(t), 2 + 3 * np.sin(t)]),
                             np.array([[0.0, 0.0], [2.0, 1.0], [3.0, 3.0]])])
    aug = PerlinOriginalAugment(strength=0.2)
    a, b = aug(sketch, np.random.default_rng(5)), aug(sketch, np.random.default_rng(5))
    np.testing.assert_array_equal(a, b)  # deterministic in the rng
    lines, moved = to_polylines(sketch), to_polylines(a)
    shifts = [m - line for m, line in zip(moved, lines)]
    for shift in shifts:
        np.testing.assert_allclose(shift.mean(axis=0), 0.0, atol=1e-5)  # zero mean per stroke
    # in unit-disc units the displacement is the sketch's own: 10x the sketch, 10x the shift, same seed
    big = to_polylines(aug(sketch * np.array([10, 10, 1], dtype=np.float32), np.random.default_rng(5)))
    np.testing.assert_allclose(big[0] - lines[0] * 10, shifts[0] * 10, rtol=1e-3, atol=1e-4)
    # λ scales it linearly, and λ = 0 leaves the sketch alone
    double = to_polylines(PerlinOriginalAugment(strength=0.4)(sketch, np.random.default_rng(5)))
    np.testing.assert_allclose(double[1] - lines[1], 2 * shifts[1], rtol=1e-3, atol=1e-5)
    np.testing.assert_array_equal(PerlinOriginalAugment(strength=0.0)(sketch, rng), sketch)
    # the original, step by step (data/utils.py: continuous_noise on the moved, scaled sketch)
    noise = pytest.importorskip("noise")
    seed = int(np.random.default_rng(5).integers(0, 10001))
    origin = lines[0][0]
    radius = max(np.linalg.norm(line - origin, axis=1).max() for line in lines)
    for k, (line, shift) in enumerate(zip(lines, shifts)):
        stroke = (line.astype(np.float64) - origin) / radius + (seed + k)
        n = np.array([[noise.pnoise2(*(p + 5)), noise.pnoise2(*(p - 5))] for p in stroke])
        np.testing.assert_allclose(shift, 0.2 * (n - n.mean(0)) * radius, rtol=1e-4, atol=1e-5)


# -- schedule, split, experiment ------------------------------------------------------------------

def test_damped_cos2_is_the_originals_annealing_policy():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    sched = damped_cos2(optimizer, period=100, epoch_steps=3)
    factor = sched.lr_lambdas[0]

    def original(e: int) -> float:  # fit_ae_oneseq.py: annealing_policy, cos_annealing_period = 100
        wt = (math.pi / 200) * e
        return (1 - 1 / 50) * math.exp(-math.log(4) / math.pi * wt) * math.cos(wt) ** 2 + 1 / 50

    for epoch in (0, 1, 37, 100, 150, 200, 333):
        assert factor(3 * epoch) == pytest.approx(original(epoch), rel=1e-12)
        assert factor(3 * epoch + 2) == factor(3 * epoch)  # stepped once per epoch
    assert factor(0) == 1.0 and factor(300) == pytest.approx(1 / 50)  # the floor at epoch `period`
    assert factor(600) == pytest.approx((1 - 1 / 50) / 4 + 1 / 50)  # next peak 4x lower
    with pytest.raises(ValueError):
        damped_cos2(optimizer, period=0)


def test_random_split_is_the_originals(tmp_path):
    rows = np.empty(30, dtype=object)
    for i in range(30):  # sample i: a segment from the origin to (i, 1)
        rows[i] = np.array([[0, 0, 0, 0], [i, 1, 1, 1]], dtype=np.float32)
    path = tmp_path / "toy.npz"
    np.savez(path, points=rows, split=np.zeros(30, dtype=np.int8), labels=np.arange(30) % 3)
    splits = PointsNpz(path=str(path), random_split=0.8, split_seed=1234).load()
    train_ids = [int(s[1, 0]) for s in splits["train"]]
    expected, _ = torch.utils.data.random_split(range(30), [24, 6], generator=torch.Generator().manual_seed(1234))
    assert train_ids == list(expected.indices)
    valid_ids = [int(s[1, 0]) for s in splits["valid"]]
    assert sorted(train_ids + valid_ids) == list(range(30))
    assert [int(s[1, 0]) for s in splits["test"]] == valid_ids  # the original tests on its validation split
    assert [int(s[1, 0]) for s in PointsNpz(path=str(path), random_split=0.8, split_seed=1).load()["train"]] \
        != train_ids
    assert len(PointsNpz(path=str(path)).load()["train"]) == 30  # the split column, without the option
    with pytest.raises(ValueError, match="random_split"):
        PointsNpz(path=str(path), random_split=1.5).load()


def test_vmnist_ode_original_experiment_sets_the_originals_recipe():
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=vmnist_ode_original"])
        ours = compose("train", overrides=["experiment=vmnist_ode"])
    assert cfg.model.net.spline_index_time and cfg.model.net.adjoint and not cfg.model.net.cnf
    assert cfg.model.collate.resample == "index" and ours.model.collate.resample == "arclength"
    assert cfg.trainer.grad_clip is None and ours.trainer.grad_clip
    assert cfg.data.source.random_split == 0.8 and cfg.data.source.split_seed == 1234
    assert cfg.sched._target_.endswith("damped_cos2") and cfg.sched.epoch_steps == int(10575 * 0.8) // 64
    for key in ("n_hidden", "z_size", "n_points", "t_max", "method", "omega"):
        assert cfg.model.net[key] == ours.model.net[key]
    assert (cfg.data.batch_size, cfg.trainer.max_steps, cfg.optim) == (ours.data.batch_size, ours.trainer.max_steps,
                                                                        ours.optim)
    overrides = {"n_hidden": 8, "z_size": 4, "enc_arch": [8], "dec_arch": [8], "n_points": 20}
    model = build({**cfg.model.net, **overrides, "t_max": 5.0})
    assert not model.solver.fast and model.solver.adjoint and model.encoder.spline_index_time


# -- training: a short overfit, deterministic -----------------------------------------------------

def _train(sketches: list[np.ndarray], steps: int) -> list[float]:
    batch = CurveCollate(n_points=20, resample="index")(sketches)
    model = make(cnf=True, kl_weight=1e-3, kl_start=0, kl_end=10)
    return train_steps(model, batch, steps, lr=1e-2, record=lambda out: out["recon_xy"] + out["pen_bce"])


def test_short_overfit_with_cnf_and_index_time_on_vectormnist_is_deterministic(shared_data):
    splits = PointsNpz(path=str(shared_data / "vectormnist" / "vmnist.npz")).load()
    sketches = splits["train"][::1000][:4]
    first = _train(sketches, 20)
    assert np.isfinite(first).all() and max(first[-3:]) < 0.3 * first[0]
    assert _train(sketches, 6) == first[:6]  # same seed, same numbers
