"""SketchODE: shapes, solvers and backends, continuous-time properties, and a short overfit on real data."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
import torchdiffeq

from helpers import train_steps

from sketchlab.data.curves import CurveCollate
from sketchlab.data.strokes import from_polylines, points_to_stroke3, to_polylines
from sketchlab.models.sketch_ode import SketchODE
from sketchlab.models.sketch_ode.encoder import spline_derivative_operator
from sketchlab.models.sketch_ode.model import kl_weight_at
from sketchlab.models.sketch_ode.periodic import PeriodicActivation, PeriodicMLP
from sketchlab.models.sketch_ode.solvers import TABLEAUS, SolverConfig, TimePlan, integrate_fixed

SMALL = dict(n_hidden=16, z_size=8, enc_arch=(16,), dec_arch=(16,), n_points=30)


def toy_sketches(n: int = 3, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        s = np.column_stack([rng.normal(size=(12, 2)), np.zeros(12)]).astype(np.float32)
        s[5, 2] = s[-1, 2] = 1
        out.append(s)
    return out


def toy_batch(n_points: int = 30, n: int = 3) -> dict[str, torch.Tensor]:
    return CurveCollate(n_points=n_points)(toy_sketches(n))


def make(**kw) -> SketchODE:
    torch.manual_seed(0)
    return SketchODE(**{**SMALL, **kw})


def grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def loss_and_grads(model: SketchODE, batch) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    model.zero_grad()
    out = model.loss(batch)
    out["loss"].backward()
    return {k: float(v.detach()) for k, v in out.items()}, grads(model)


def assert_grads_close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], rtol: float, atol: float) -> None:
    """Each parameter's gradient agrees as a vector: ``|a - b| <= rtol |b| + atol``."""
    assert a.keys() == b.keys()
    for name in a:
        error, size = float((a[name] - b[name]).norm()), float(b[name].norm())
        assert error <= rtol * size + atol, f"{name}: |difference| {error:.3g} vs |gradient| {size:.3g}"


# -- building blocks ------------------------------------------------------------------------------
def test_periodic_mlp_uses_cos_of_omega_and_learned_frequencies_are_bounded():
    act = PeriodicActivation(omega=3.0)
    x = torch.linspace(-1, 1, 5)
    torch.testing.assert_close(act(x), torch.cos(3.0 * x))
    learned = PeriodicActivation(omega=3.0, learnable=True)
    assert 0 < float(learned.omega.detach()) < 3.0
    mlp = PeriodicMLP(4, 2, [8, 8], omega=2.0, fn="sin")
    assert mlp(torch.zeros(5, 4)).shape == (5, 2) and len(mlp.activations()) == 2
    with pytest.raises(ValueError, match="periodic activation"):
        PeriodicActivation(fn="relu")


def test_spline_derivative_operator_matches_torchcde():
    import torchcde

    times = torch.linspace(0, 5, 20)
    path = torch.randn(2, 20, 3)
    query = torch.linspace(0, 5, 57)
    for index_time in (False, True):
        coeffs = torchcde.natural_cubic_coeffs(path, t=None if index_time else times)
        expected = torchcde.CubicSpline(coeffs, t=times).derivative(query)
        operator = spline_derivative_operator(times, query, index_time)
        torch.testing.assert_close(torch.einsum("qg,bgc->bqc", operator, path), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("method", sorted(TABLEAUS))
@pytest.mark.parametrize("step_size", [None, 0.07])
def test_fixed_step_loop_matches_torchdiffeq(method, step_size):
    """The fast loop reproduces torchdiffeq's solution, its step_size grid and its output interpolation."""
    torch.manual_seed(0)
    field = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)).double()
    y0 = torch.randn(4, 3, dtype=torch.float64)
    times = torch.linspace(0, 1.3, 11, dtype=torch.float64)
    options = {} if step_size is None else {"step_size": step_size}
    expected = torchdiffeq.odeint(lambda t, y: field(y), y0, times, method=method, options=options)
    plan = TimePlan.build(times, method, step_size)
    got = integrate_fixed(lambda step, stage, t, y: field(y), y0, plan, method)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_solver_config_validates_and_picks_a_backend():
    assert SolverConfig().fast and not SolverConfig(adjoint=True).fast
    assert not SolverConfig(method="dopri5").fast
    with pytest.raises(ValueError, match="dopri5") as err:
        SolverConfig(method="rk5")
    assert "rk4" in str(err.value) and "euler" in str(err.value)  # lists torchdiffeq's methods
    with pytest.raises(ValueError, match="backend 'fast'"):
        SolverConfig(method="dopri5", backend="fast")
    with pytest.raises(ValueError, match="backend 'fast'"):
        SolverConfig(adjoint=True, backend="fast")
    with pytest.raises(ValueError, match="step_size"):
        SolverConfig(method="dopri5", step_size=0.1)
    with pytest.raises(ValueError, match="unknown solver backend"):
        SolverConfig(backend="jax")
    with pytest.raises(ValueError, match="cuda_graph"):
        SketchODE(method="dopri5", cuda_graph=True)


# -- shapes -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("order", [1, 2])
@pytest.mark.parametrize("vae", [False, True])
def test_shapes_and_loss_terms(order, vae):
    model = make(order=order, vae=vae)
    batch = toy_batch()
    path = model.encoder.hidden_path(batch["curve"], batch["times"], SolverConfig(backend="torchdiffeq"))
    assert path.shape == (3, 30, 16)
    z = model.encode(batch)
    assert z.shape == (3, 8) and model.z_size == 8
    assert model.decode_curves(z, torch.linspace(0, 5, 17)).shape == (3, 17, 3)
    out = model.loss(batch, step=10_000)
    expected = {"loss", "recon_xy", "pen_bce"} | ({"kl", "kl_weight"} if vae else set())
    assert set(out) == expected and all(v.ndim == 0 for v in out.values())
    out["loss"].backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing


def test_the_loss_is_smooth_l1_on_positions_plus_pen_bce():
    model = make()
    batch = toy_batch()
    pred = model.decode_curves(model.encode(batch), batch["times"])
    target = batch["curve"]
    recon = torch.nn.functional.smooth_l1_loss(pred[..., :2], target[..., :2], reduction="sum") / (3 * 30)
    bce = torch.nn.functional.binary_cross_entropy(torch.sigmoid(pred[..., 2]), target[..., 2])
    out = model.loss(batch)
    torch.testing.assert_close(out["recon_xy"], recon)
    torch.testing.assert_close(out["pen_bce"], bce, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out["loss"], recon + bce, rtol=1e-5, atol=1e-6)


def test_kl_weight_annealing():
    assert kl_weight_at(0, 2.0, 100, 300) == 0.0
    assert kl_weight_at(200, 2.0, 100, 300) == pytest.approx(1.0)
    assert kl_weight_at(10_000, 2.0, 100, 300) == 2.0
    assert kl_weight_at(200, 2.0, 100, 300, "sigmoid") == pytest.approx(1.0)
    assert kl_weight_at(100, 1.0, 100, 300, "sigmoid") < 0.01 < 0.99 < kl_weight_at(300, 1.0, 100, 300, "sigmoid")
    with pytest.raises(ValueError, match="annealing"):
        kl_weight_at(0, 1.0, 0, 1, "cosine")


def test_vae_samples_in_training_and_uses_the_mean_in_eval():
    model = make(vae=True)
    batch = toy_batch()
    torch.testing.assert_close(model.encode(batch), model.encode(batch))
    assert not torch.equal(model.encode(batch, sample=True), model.encode(batch))
    model.eval()
    torch.testing.assert_close(model.loss(batch)["loss"], model.loss(batch)["loss"])


# -- solvers and backends ---------------------------------------------------------------------------
@pytest.mark.parametrize("kw", [dict(method="rk4"), dict(method="euler"), dict(method="midpoint", step_size=0.1),
                                dict(method="dopri5", rtol=1e-3, atol=1e-4)])
def test_solver_choice_by_config(kw):
    model = make(**kw)
    out = model.loss(toy_batch())
    out["loss"].backward()
    assert torch.isfinite(out["loss"])
    nfe = model.nfe()
    assert nfe["encoder"] > 0 and nfe["decoder"] > 0


def test_fast_backend_matches_torchdiffeq_rk4():
    batch = toy_batch()
    fast = loss_and_grads(make(backend="fast"), batch)
    reference = loss_and_grads(make(backend="torchdiffeq"), batch)
    assert fast[0] == pytest.approx(reference[0], rel=1e-5)
    assert_grads_close(fast[1], reference[1], rtol=1e-4, atol=1e-5)


def test_fast_backend_matches_torchdiffeq_with_a_step_size_and_the_original_spline():
    batch = toy_batch()
    kw = dict(step_size=0.07, spline_index_time=True)
    fast = loss_and_grads(make(backend="fast", **kw), batch)
    reference = loss_and_grads(make(backend="torchdiffeq", **kw), batch)
    assert fast[0] == pytest.approx(reference[0], rel=1e-5)
    assert_grads_close(fast[1], reference[1], rtol=1e-4, atol=1e-5)


def smooth_batch(n_points: int = 30) -> dict[str, torch.Tensor]:
    """Single-stroke arcs: a smooth control path for the CDE."""
    angles = np.linspace(0, 1.5 * np.pi, 40)
    arcs = [from_polylines([np.column_stack([rx * np.cos(angles), ry * np.sin(angles)])])
            for rx, ry in [(1, 1), (2, 1), (1, 3)]]
    return CurveCollate(n_points=n_points)(arcs)


def test_adjoint_gives_the_same_loss_and_gradients():
    """The adjoint integrates the backward ODE with the same rk4, so its gradients equal direct backprop's up to
    the discretisation error. That error is small for smooth controls, as here; the pen channel's jumps
    between strokes make the CDE's control rough, and there the two differ by a few percent."""
    batch = _double(smooth_batch())
    direct = loss_and_grads(make(backend="torchdiffeq", adjoint=False).double(), batch)
    adjoint_model = make(backend="torchdiffeq", adjoint=True).double()
    adjoint = loss_and_grads(adjoint_model, batch)
    assert direct[0] == pytest.approx(adjoint[0], rel=1e-12)
    assert_grads_close(direct[1], adjoint[1], rtol=1e-3, atol=1e-6)
    assert adjoint_model.nfe()["decoder"] == 2 * 29 * 4  # forward and backward solves both evaluate


def _double(batch):
    return {k: v.double() for k, v in batch.items()}


def test_spline_time_flag_changes_the_encoding():
    batch = toy_batch()
    torch.manual_seed(0)
    consistent, original = make(), make(spline_index_time=True)
    original.load_state_dict(consistent.state_dict())
    assert not torch.allclose(consistent.encode(batch), original.encode(batch))


# -- continuous-time properties ---------------------------------------------------------------------
def test_decoding_on_a_denser_grid_passes_through_the_same_points():
    model = make().eval()
    z = torch.randn(2, 8)
    coarse = model.decode_curves(z, model.time_grid())
    dense_n = model.dense_decode_kwargs(4)["n_points"]
    dense = model.decode_curves(z, model.time_grid(dense_n))
    assert dense.shape[1] == 4 * 29 + 1
    torch.testing.assert_close(dense[:, ::4], coarse, rtol=1e-3, atol=1e-4)
    sketches = model.decode(z, n_points=dense_n)
    assert len(sketches) == 2 and all(s.dtype == np.float32 and s.shape[1] == 3 for s in sketches)


def test_interpolation_ends_at_the_decoded_endpoints():
    model = make().eval()
    z = torch.randn(2, 8)
    ends = model.decode(z)
    path = model.interpolate(z[0], z[1], steps=5)
    assert len(path) == 5
    np.testing.assert_allclose(path[0], ends[0], atol=1e-5)
    np.testing.assert_allclose(path[-1], ends[1], atol=1e-5)


@pytest.mark.parametrize("learn_omega", [False, True])
def test_changing_omega_at_test_time_changes_the_drawing_and_is_undone(learn_omega):
    model = make(learn_omega=learn_omega).eval()
    z = torch.randn(2, 8)
    default = model.decode_curves(z)
    slower = model.decode_curves(z, omega=1.5)
    assert slower.shape == default.shape and not torch.allclose(slower, default)
    with model.frequency(3.0):  # the configured ω: nothing changes
        torch.testing.assert_close(model.decode_curves(z), default)
    torch.testing.assert_close(model.decode_curves(z), default)
    assert len(model.decode(z, omega=1.5)) == 2
    with pytest.raises(ValueError, match="omega"):
        model.decode(z, omega=0.0)


def test_reconstruct_returns_drawings_in_the_data_units():
    model = make().eval()
    batch = toy_batch()
    in_disc = model.decode(model.encode(batch))
    in_data = model.reconstruct(batch)
    for a, b, s in zip(in_disc, in_data, batch["scale"]):
        np.testing.assert_allclose(b[:, :2], a[:, :2] * float(s), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="latent"):
        model.decode(None, n=2)
    with pytest.raises(ValueError, match="curve"):
        model.loss({"strokes": torch.zeros(1)})


def test_bf16_autocast_keeps_the_loss_in_float32():
    model = make()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model.loss(toy_batch())
    assert out["loss"].dtype == torch.float32 and torch.isfinite(out["loss"])


def test_cuda_graph_setting_falls_back_to_eager_off_cuda():
    batch = toy_batch()
    eager = loss_and_grads(make(), batch)
    graphed = loss_and_grads(make(cuda_graph=True), batch)
    assert graphed[0] == eager[0]
    assert_grads_close(graphed[1], eager[1], rtol=0, atol=0)


@pytest.mark.gpu
@pytest.mark.parametrize("vae", [False, True])
def test_cuda_graph_training_matches_eager(vae):
    """Captured steps read the live weights: a few SGD steps give the eager losses and gradients."""
    batch = {k: v.cuda() for k, v in toy_batch().items()}
    runs = []
    for cuda_graph in (False, True):
        model = make(cuda_graph=cuda_graph, vae=vae, kl_start=0, kl_end=0).cuda()
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-2)
        history = []
        for _ in range(3):
            torch.manual_seed(1)  # the same VAE noise in both runs
            history.append(loss_and_grads(model, batch))
            optimizer.step()
        runs.append(history)
    for (loss_e, grad_e), (loss_g, grad_g) in zip(*runs):
        assert loss_g["loss"] == pytest.approx(loss_e["loss"], rel=1e-5)
        assert_grads_close(grad_g, grad_e, rtol=1e-4, atol=1e-6)


# -- real data ------------------------------------------------------------------------------------
def test_overfits_a_few_real_vectormnist_digits(shared_data):
    data = np.load(shared_data / "vectormnist" / "vmnist.npz", allow_pickle=True)
    picks = np.nonzero(data["variant"] == 0)[0][::40][:8]  # 8 different drawings
    sketches = [points_to_stroke3(data["points"][i][:, [0, 1, 3]]) for i in picks]
    assert {len(to_polylines(s)) for s in sketches} <= {1, 2, 3}
    batch = CurveCollate(n_points=50)(sketches)
    torch.manual_seed(0)
    model = SketchODE(n_points=50)
    start = time.perf_counter()
    losses = train_steps(model, batch, 30)
    assert np.isfinite(losses).all()
    assert losses[-1] < 0.25 * losses[0], losses
    assert time.perf_counter() - start < 60


def test_benchmark_script_runs_small_on_cpu(tmp_path, monkeypatch):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "bench_sketch_ode.py"
    monkeypatch.syspath_prepend(str(path.parent))  # its sibling bench_report, as when run as a script
    spec = importlib.util.spec_from_file_location("bench_sketch_ode", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    report = bench.main(["--device", "cpu", "--batch-size", "2", "--n-points", "12", "--hidden", "8", "--z-size", "4",
                         "--steps", "3", "--warmup", "1", "--data", "synthetic", "--out", str(tmp_path / "b.json")])
    results = {r["variant"]: r for r in report["results"]}
    assert set(results) == {"adjoint", "torchdiffeq", "fast-loop", "fast"}
    assert results["adjoint"]["nfe_backward"] > 0 and results["fast"]["nfe_backward"] == 0
    # rk4: 4 evaluations a step, encoder and decoder
    assert results["fast"]["nfe_forward"] == results["fast-loop"]["nfe_forward"] == 2 * 11 * 4
    assert report["first_grad_rel_diff"]["fast vs torchdiffeq"] < 1e-4
    assert report["first_grad_rel_diff"]["fast vs fast-loop"] < 1e-5
    assert (tmp_path / "b.json").is_file()


def test_an_autoencoder_is_sampled_around_real_sketches_not_from_n01(data_root):
    """The original's conditional sampling: z of real sketches + N(0, sigma^2); a prior only for vae=true."""
    from sketchlab import sampling
    from sketchlab.data.curves import CurveCollate
    from sketchlab.data.datamodule import SketchDataModule
    from sketchlab.data.sources import PointsNpz
    from sketchlab.models.sketch_ode import SketchODE

    torch.manual_seed(0)
    model = SketchODE(n_hidden=8, z_size=4, enc_arch=[8], dec_arch=[8], n_points=20)
    assert not model.has_prior and SketchODE(n_hidden=8, z_size=4, enc_arch=[8], dec_arch=[8], vae=True).has_prior
    data = SketchDataModule(PointsNpz(str(data_root / "vectormnist" / "vmnist.npz")), batch_size=4, limit=8,
                            collate=CurveCollate(n_points=20)).setup()
    with pytest.raises(ValueError, match="no prior"):
        sampling.sample(model, 2)
    exact = sampling.sample(model, 3, data=data, sigma=0.0)
    recons = sampling.reconstruct(model, data, sampling.spread(data.sketches("valid"), 3))
    assert all(np.allclose(a, b, atol=1e-5) for a, b in zip(exact, recons))  # sigma 0: the reconstructions
    jittered = sampling.sample(model, 3, data=data, sigma=0.5)
    assert not all(np.allclose(a, b, atol=1e-5) for a, b in zip(jittered, recons))
