"""SketchODE's other modes: the strokewise model (model=sketch_ode_strokewise) and the original's RNN baseline
(model=sketch_ode_rnn_baseline): data layout, shapes, masking, decoding, a short overfit, determinism, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from helpers import train_steps

from sketchlab.data.curves import CurveCollate
from sketchlab.data.strokes import from_polylines, points_to_stroke3, to_polylines
from sketchlab.data.strokewise import StrokewiseCollate, resample_stroke, stroke3_to_strokes, strokes_to_stroke3
from sketchlab.models.sketch_ode.rnn_baseline import CurveRNN
from sketchlab.models.sketch_ode.strokewise import StrokewiseSketchODE

SMALL_SW = dict(n_hidden=16, z_size=8, enc_arch=(16,), dec_arch=(16,), n_points=20)
SMALL_RNN = dict(n_hidden=16, z_size=8, n_points=20)


def toy_sketches(seed: int = 0) -> list[np.ndarray]:
    """Sketches of 1, 3 and 2 strokes (stroke-3, random polylines)."""
    rng = np.random.default_rng(seed)
    return [from_polylines([rng.normal(size=(int(rng.integers(3, 8)), 2)) + 3 * k for k in range(n)])
            for n in (1, 3, 2)]


def make_sw(**kw) -> StrokewiseSketchODE:
    torch.manual_seed(0)
    return StrokewiseSketchODE(**{**SMALL_SW, **kw})


def make_rnn(**kw) -> CurveRNN:
    torch.manual_seed(0)
    return CurveRNN(**{**SMALL_RNN, **kw})


def vmnist_digits(root, n_single: int = 4, n_multi: int = 4) -> list[np.ndarray]:
    """Real VectorMNIST drawings (one variant each): ``n_single`` one-stroke and ``n_multi`` multi-stroke ones."""
    data = np.load(root / "vectormnist" / "vmnist.npz", allow_pickle=True)
    picks = np.nonzero(data["variant"] == 0)[0]
    strokes = np.array([int(data["points"][i][:, 3].sum()) for i in picks])
    chosen = list(picks[strokes == 1][::37][:n_single]) + list(picks[strokes > 1][::11][:n_multi])
    return [points_to_stroke3(data["points"][i][:, [0, 1, 3]]) for i in chosen]


# -- the strokewise data --------------------------------------------------------------------------
def test_strokewise_collate_pads_strokes_in_the_unit_disc():
    sketches = toy_sketches()
    batch = StrokewiseCollate(n_points=20)(sketches)
    assert batch["strokes"].shape == (3, 3, 20, 2) and batch["times"].shape == (20,)
    assert batch["n_strokes"].tolist() == [1, 3, 2]
    torch.testing.assert_close(batch["stroke_mask"], torch.tensor([[1.0, 0, 0], [1, 1, 1], [1, 1, 0]]))
    assert float(batch["strokes"][0, 1:].abs().sum()) == 0 and float(batch["strokes"][2, 2].abs().sum()) == 0
    assert float(batch["strokes"][:, 0, 0].abs().max()) == 0  # every sketch starts at the origin
    assert float(batch["strokes"].norm(dim=-1).max()) <= 1 + 1e-6
    # each stroke keeps its end points, in data units again after the round trip
    for sketch, strokes, n, scale in zip(sketches, batch["strokes"], batch["n_strokes"], batch["scale"]):
        lines = to_polylines(sketch)
        back = to_polylines(strokes_to_stroke3(strokes[:n].numpy(), float(scale)))
        assert len(back) == len(lines)
        for a, b in zip(lines, back):
            np.testing.assert_allclose(b[[0, -1]] - back[0][0], a[[0, -1]] - lines[0][0], atol=1e-4)


def test_arc_resampling_is_uniform_along_the_stroke_and_index_resampling_follows_the_points():
    line = np.array([[0.0, 0.0], [0.1, 0.0], [0.2, 0.0], [1.0, 0.0]])  # unevenly sampled straight line
    arc = resample_stroke(line, 11, "arclength")
    np.testing.assert_allclose(arc[:, 0], np.linspace(0, 1, 11), atol=1e-12)
    index = resample_stroke(line, 7, "index")
    np.testing.assert_allclose(index[[0, 2, 4, 6]], line, atol=1e-12)  # through the knots it hits
    dot = resample_stroke(np.array([[0.3, 0.4], [0.3, 0.4]]), 5)
    np.testing.assert_allclose(dot, np.tile([0.3, 0.4], (5, 1)))
    with pytest.raises(ValueError, match="resampling"):
        StrokewiseCollate(resample="spline")
    with pytest.raises(ValueError, match="sketch 0: cannot turn an empty sketch"):
        StrokewiseCollate()([np.zeros((0, 3), dtype=np.float32)])


def test_index_resampling_is_the_originals_spline():
    """data/utils.py: resample -- torchcde's natural cubic spline on index knots, uniform in index."""
    import torchcde

    line = np.random.default_rng(1).normal(size=(9, 2))
    seq = torch.from_numpy(line)
    spline = torchcde.CubicSpline(coeffs=torchcde.natural_cubic_coeffs(seq.unsqueeze(0)))
    expected = spline.evaluate(torch.linspace(spline.interval[0], spline.interval[-1], 25, dtype=torch.float64))
    np.testing.assert_allclose(resample_stroke(line, 25, "index"), expected.squeeze(0).numpy(), atol=1e-9)
    strokes, scale = stroke3_to_strokes(from_polylines([line]), 25, "index")
    np.testing.assert_allclose(strokes[0] * scale + line[0], expected.squeeze(0).numpy(), atol=1e-5)


# -- the strokewise model ---------------------------------------------------------------------------
@pytest.mark.parametrize("vae", [False, True])
def test_strokewise_shapes_and_every_parameter_learns(vae):
    model = make_sw(vae=vae)
    batch = StrokewiseCollate(n_points=20)(toy_sketches())
    z = model.encode(batch)
    assert z.shape == (3, 8) and model.z_size == 8 and model.has_prior == vae
    out = model.loss(batch, step=20_000)
    assert set(out) == {"loss", "recon_xy", "finish_ce"} | ({"kl", "kl_weight"} if vae else set())
    assert all(v.ndim == 0 and torch.isfinite(v) for v in out.values())
    out["loss"].backward()
    assert not [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]


def test_strokewise_padding_changes_nothing_for_a_sketch():
    """A sketch's code and its share of the loss are the same alone as beside sketches with more strokes."""
    model = make_sw().eval()
    collate = StrokewiseCollate(n_points=20)
    sketches = toy_sketches()
    together = collate(sketches)
    with torch.no_grad():
        z = model.encode(together)
        alone = [model.encode(collate([s])) for s in sketches]
        torch.testing.assert_close(z, torch.cat(alone), rtol=1e-5, atol=1e-6)
        # the loss averages over real strokes: the batch loss is the stroke-weighted mean of the sketches' own
        per_sketch = torch.stack([model.loss(collate([s]))["loss"] for s in sketches])
        weights = together["n_strokes"].float()
        expected = (per_sketch * weights).sum() / weights.sum()
        torch.testing.assert_close(model.loss(together)["loss"], expected, rtol=1e-5, atol=1e-6)


def test_the_finish_classifier_ends_the_drawing():
    model = make_sw().eval()
    z = torch.randn(2, 8)
    with torch.no_grad():
        model.finish.weight.zero_()
        model.finish.bias.copy_(torch.tensor([-5.0, 5.0]))  # "finish" after every stroke
        assert [len(to_polylines(s)) for s in model.decode(z)] == [1, 1]
        model.finish.bias.copy_(torch.tensor([5.0, -5.0]))  # never: up to max_strokes
        drawings = model.decode(z, max_strokes=3, n_points=7)
    assert [len(to_polylines(s)) for s in drawings] == [3, 3] and all(len(s) == 21 for s in drawings)
    assert model.dense_decode_kwargs(4) == {"n_points": 77}
    strokes = model.decode_strokes(z, omega=None, max_strokes=2)
    with torch.no_grad():
        other = model.decode_strokes(z, omega=1.5, max_strokes=2)
    assert not torch.allclose(strokes[0][1], other[0][1])  # the abstraction knob changes the drawing


def test_strokewise_fast_backend_matches_torchdiffeq():
    batch = StrokewiseCollate(n_points=20)(toy_sketches())
    with torch.no_grad():
        fast = make_sw(backend="fast").loss(batch)
        slow = make_sw(backend="torchdiffeq").loss(batch)
    for key in fast:
        assert float(fast[key]) == pytest.approx(float(slow[key]), rel=1e-5, abs=1e-7), key


# -- the RNN baseline -----------------------------------------------------------------------------
@pytest.mark.parametrize("vae", [False, True])
def test_rnn_baseline_shapes_and_every_parameter_learns(vae):
    model = make_rnn(vae=vae)
    batch = CurveCollate(n_points=20)(toy_sketches())
    assert model.encode(batch).shape == (3, 8) and model.has_prior == vae
    out = model.loss(batch, step=20_000)
    assert set(out) == {"loss", "recon_xy", "pen_bce"} | ({"kl", "kl_weight"} if vae else set())
    out["loss"].backward()
    assert not [n for n, p in model.named_parameters() if p.grad is None]


def test_rnn_baseline_is_teacher_forced_in_training_and_runs_free_in_eval():
    model = make_rnn()
    batch = CurveCollate(n_points=20)(toy_sketches())
    curve = batch["curve"]
    z = model.encode(batch)
    with torch.no_grad():
        pred = model.teacher_forced(z, curve)
        assert pred.shape == (3, 19, 3)
        changed = curve.clone()
        changed[:, 10:] += 1.0
        # step j sees true points 0..j only
        torch.testing.assert_close(model.teacher_forced(z, changed)[:, :10], pred[:, :10])
        assert not torch.allclose(model.teacher_forced(z, changed)[:, 10:], pred[:, 10:])
        train_loss = model.train().loss(batch)["loss"]
        model.eval()
        eval_loss = model.loss(batch)["loss"]
        free = model.free_running(z, 20)
        assert not torch.allclose(free, pred)
        drawings = model.decode(z)
    assert float(train_loss) != pytest.approx(float(eval_loss))
    assert [len(d) for d in drawings] == [sum((torch.sigmoid(f[:, 2]) < 0.5).tolist()) + 1 for f in free]
    # the drawn points are the free-running positions (after the given start at the origin)
    first = np.cumsum(drawings[0][:, :2], axis=0)
    drawing_rows = np.concatenate([[True], (torch.sigmoid(free[0, :, 2]) < 0.5).numpy()])
    xy = np.concatenate([[[0.0, 0.0]], free[0, :, :2].numpy()])[drawing_rows]
    np.testing.assert_allclose(first, xy, atol=1e-5)


# -- both: a short overfit on real data, determinism ------------------------------------------------
@pytest.mark.slow  # about 50 CPU-s: 25 steps of up to three stroke solves each
def test_strokewise_overfits_a_few_real_vectormnist_digits(shared_data):
    sketches = vmnist_digits(shared_data)
    batch = StrokewiseCollate(n_points=30)(sketches)
    assert int(batch["n_strokes"].max()) > 1
    torch.manual_seed(0)
    model = StrokewiseSketchODE(n_hidden=32, z_size=16, n_points=30)
    losses = train_steps(model, batch, 25)
    assert np.isfinite(losses).all()
    assert min(losses[-5:]) < 0.3 * losses[0], losses


@pytest.mark.slow  # 90-215 s on a busy 2-core machine: a long training
def test_rnn_baseline_overfits_a_few_real_vectormnist_digits(shared_data):
    batch = CurveCollate(n_points=50)(vmnist_digits(shared_data))
    torch.manual_seed(0)
    model = CurveRNN(n_hidden=32, z_size=16, n_points=50)
    losses = train_steps(model, batch, 60)
    assert np.isfinite(losses).all()
    assert losses[-1] < 0.5 * losses[0], losses  # measured: 0.976 -> 0.337 (teacher forced)


@pytest.mark.parametrize("kind", ["strokewise", "rnn"])
def test_same_seed_same_losses(kind):
    sketches = toy_sketches()
    batch = StrokewiseCollate(n_points=20)(sketches) if kind == "strokewise" else CurveCollate(n_points=20)(sketches)
    runs = [train_steps(make_sw(vae=True) if kind == "strokewise" else make_rnn(vae=True), batch, 3)
            for _ in range(2)]
    assert runs[0] == runs[1]


# -- the command-line tools -------------------------------------------------------------------------
TINY = {"sketch_ode_strokewise": ["model=sketch_ode_strokewise", "model.net.n_hidden=16", "model.net.z_size=8",
                                  "model.net.enc_arch=[16]", "model.net.dec_arch=[16]", "model.net.n_points=20",
                                  "model.net.max_strokes=4"],
        "sketch_ode_rnn_baseline": ["model=sketch_ode_rnn_baseline", "model.net.n_hidden=16", "model.net.z_size=8",
                                    "model.net.n_points=20"]}


@pytest.mark.slow
@pytest.mark.parametrize("model", sorted(TINY))
def test_train_sample_and_evaluate_through_the_cli(tmp_path, data_root, model):
    from hydra import compose, initialize_config_dir

    from helpers import SHORT, run_dirs, train
    from sketchlab.cli.sample import run_sampling
    from sketchlab.config import config_dir
    from sketchlab.validation import ConfigValueError
    from test_cli_evaluate import evaluate

    train(tmp_path, *TINY[model], "data=vmnist", "data.batch_size=4", "data.limit=16", "augment=none", *SHORT,
          "logger=none", data=data_root)  # no MLflow store to create: what is tested is the model in the tools
    (run_dir,) = run_dirs(tmp_path)
    out = tmp_path / "samples"
    overrides = [f"checkpoint={run_dir}", f"out_dir={out}", "n=4", "interpolations=1", "interp_steps=3",
                 "metric_batches=1", "distance_sketches=4", "cell_size=32", "formats=[png]", "log_to_mlflow=false"]
    strokewise = model == "sketch_ode_strokewise"
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg = compose("sample", overrides=overrides + (["omega=2.0"] if strokewise else []))
        rejected = compose("sample", overrides=overrides + ["omega=2.0"])
    summary = run_sampling(cfg)
    names = {"samples", "reconstructions", "interpolations"} | ({"dense_reconstructions"} if strokewise else set())
    assert {f"{n}.png" for n in names} <= {p.name for p in out.iterdir()}
    assert summary["step"] == 2 and np.isfinite(summary["metrics"]["loss"])
    assert ("finish_ce" if strokewise else "pen_bce") in summary["metrics"]
    if not strokewise:
        with pytest.raises(ConfigValueError, match="omega"):
            run_sampling(rejected)
    proc = evaluate(tmp_path, data_root, f"checkpoint={run_dir}", "which=last", "max_sketches=6",
                    f"out_dir={tmp_path / 'eval'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert report["model"] == model and report["decoding"]["mode"] == "deterministic"
    assert 0 < report["metrics"]["test/chamfer_median"] < 10
