"""Sketch-RNN: shapes, magenta's loss (checked by hand in float64), masking, KL, sampling, overfitting real sheep."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from helpers import random_sketches
from sketchlab.data.stroke5 import Stroke5Collate
from sketchlab.data.strokes import scale_factor
from sketchlab.models.sketch_rnn import SketchRNN
from sketchlab.models.sketch_rnn.gmm import Mixture, adjust_temp, sample_step, split_params
from sketchlab.models.sketch_rnn.model import kl_weight_at

M = 3  # mixture components in the tiny models
TINY = dict(enc_rnn_size=8, dec_rnn_size=12, z_size=4, num_mixture=M, hyper_num_units=6, hyper_embedding_size=3,
            mask_pen_in_eval=True, eval_kl_weight="annealed")  # the eval-time options the loss tests below exercise
CELLS = ["lstm", "layer_norm", "hyper"]


def _batch(max_seq_len=12, pad_to="max_seq_len", **kw):
    return Stroke5Collate(max_seq_len, pad_to)(random_sketches(**kw))


def _model(**kw) -> SketchRNN:
    torch.manual_seed(0)
    return SketchRNN(**{**TINY, **kw})


# -- shapes ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("conditional", [True, False])
def test_shapes_and_every_parameter_gets_a_gradient(cell, conditional):
    model = _model(enc_model=cell, dec_model=cell, conditional=conditional)
    batch = _batch()
    strokes = batch["strokes"]
    b, t = strokes.shape[0], strokes.shape[1] - 1
    z = model.encode(batch) if conditional else None
    if conditional:
        assert z.shape == (b, TINY["z_size"]) and model.z_size == TINY["z_size"]
    mix, state = model.decode_params(strokes[:, :-1], z, model.initial_state(z, b, strokes))
    for p in (mix.pi, mix.mu1, mix.mu2, mix.sigma1, mix.sigma2, mix.corr):
        assert p.shape == (b, t, M)
    assert mix.pen_logits.shape == (b, t, 3)
    assert state[0].shape == (b, TINY["dec_rnn_size"])
    torch.testing.assert_close(mix.pi.sum(-1), torch.ones(b, t))

    out = model.loss(batch, step=0)
    assert set(out) >= {"loss", "recon", "offset_nll", "pen_ce", "kl", "kl_weight"}
    assert all(v.dim() == 0 and torch.isfinite(v) for v in out.values())
    out["loss"].backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None]
    assert not missing, f"parameters without gradient: {missing}"


@torch.no_grad()
def test_unconditional_model_has_no_encoder_and_refuses_to_encode():
    model = _model(conditional=False)
    assert not model.conditional and model.z_size == 0
    assert not any(name.startswith("enc_") for name, _ in model.named_parameters())
    with pytest.raises(ValueError, match="unconditional"):
        model.encode(_batch())
    out = model.loss(_batch())
    assert float(out["kl"]) == 0.0
    torch.testing.assert_close(out["loss"], out["recon"])


def test_magenta_default_sizes():
    model = SketchRNN()
    assert model.decoder.cell.hidden_size == 512 and model.enc_fw.cell.hidden_size == 256
    assert model.decoder.cell.input_size == 5 + 128 and model.output.out_features == 6 * 20 + 3
    assert model.decoder.cell.recurrent_dropout == pytest.approx(0.1)
    # magenta's vector_rnn parameter count for these hparams (lstm encoder and decoder)
    enc = 2 * (5 * 1024 + 256 * 1024 + 1024)
    dec = (133 * 2048 + 512 * 2048 + 2048) + (128 * 1024 + 1024) + (512 * 123 + 123)
    assert sum(p.numel() for p in model.parameters()) == enc + 2 * (512 * 128 + 128) + dec


# -- the loss, by hand ----------------------------------------------------------------------------

def _reference_recon(out: np.ndarray, target: np.ndarray, mask_pen: bool) -> tuple[float, float]:
    """magenta's get_mixture_coef + get_lossfunc in float64, mean over B x T."""
    pen_logits, rest = out[..., :3], out[..., 3:]
    pi_l, mu1, mu2, s1, s2, rho = (rest[..., k * M:(k + 1) * M] for k in range(6))
    pi = np.exp(pi_l - pi_l.max(-1, keepdims=True))
    pi /= pi.sum(-1, keepdims=True)
    s1, s2, rho = np.exp(s1), np.exp(s2), np.tanh(rho)
    x1, x2 = target[..., 0:1], target[..., 1:2]
    zz = ((x1 - mu1) / s1) ** 2 + ((x2 - mu2) / s2) ** 2 - 2 * rho * (x1 - mu1) * (x2 - mu2) / (s1 * s2)
    dens = np.exp(-zz / (2 * (1 - rho ** 2))) / (2 * np.pi * s1 * s2 * np.sqrt(1 - rho ** 2))
    not_end = 1 - target[..., 4]
    nll = -np.log((pi * dens).sum(-1) + 1e-6) * not_end
    log_p = pen_logits - np.log(np.exp(pen_logits).sum(-1, keepdims=True))
    ce = -(target[..., 2:] * log_p).sum(-1)
    if mask_pen:
        ce = ce * not_end
    return nll.mean(), ce.mean()


@pytest.mark.parametrize("training", [True, False])
def test_loss_matches_a_float64_reference(training):
    model = _model(dec_model="layer_norm").train(training)
    captured = {}
    for name in ("output", "enc_mu", "enc_presig"):
        getattr(model, name).register_forward_hook(lambda m, i, o, name=name: captured.__setitem__(name, o))
    batch = _batch()
    step = 1234
    out = {k: v.detach() for k, v in model.loss(batch, step=step).items()}
    target = batch["strokes"][:, 1:].double().numpy()
    offset, pen = _reference_recon(captured["output"].detach().double().numpy(), target, mask_pen=not training)
    mu, presig = (captured[k].detach().double().numpy() for k in ("enc_mu", "enc_presig"))
    kl = max(-0.5 * np.mean(1 + presig - mu ** 2 - np.exp(presig)), 0.2)
    weight = 0.5 - (0.5 - 0.01) * 0.99995 ** step
    assert float(out["offset_nll"]) == pytest.approx(offset, rel=1e-5)
    assert float(out["pen_ce"]) == pytest.approx(pen, rel=1e-5)
    assert float(out["kl"]) == pytest.approx(kl, rel=1e-5)
    assert float(out["kl_weight"]) == pytest.approx(weight, rel=1e-6)
    assert float(out["loss"]) == pytest.approx(offset + pen + weight * kl, rel=1e-5)


@torch.no_grad()
def test_loss_of_a_standard_normal_output_by_hand():
    """Output layer fixed to pi = 1, mu = 0, sigma = 1, rho = 0 and uniform pen logits."""
    model = _model(conditional=False, num_mixture=1).eval()
    with torch.no_grad():
        model.output.weight.zero_()
        model.output.bias.zero_()
    batch = _batch(lengths=(2, 4))
    out = model.loss(batch)
    target = batch["strokes"][:, 1:].double()
    r2 = target[..., 0] ** 2 + target[..., 1] ** 2
    not_end = 1 - target[..., 4]
    expected_nll = (-torch.log(torch.exp(-r2 / 2) / (2 * math.pi) + 1e-6) * not_end).mean()
    expected_pen = math.log(3) * not_end.mean()  # eval: masked past the end
    assert float(out["offset_nll"]) == pytest.approx(float(expected_nll), rel=1e-6)
    assert float(out["pen_ce"]) == pytest.approx(float(expected_pen), rel=1e-6)
    model.train()
    assert float(model.loss(batch)["pen_ce"]) == pytest.approx(math.log(3), rel=1e-6)  # training: unmasked


@torch.no_grad()
def test_padding_beyond_the_end_only_reaches_the_unmasked_pen_term():
    model = _model(use_recurrent_dropout=False)
    batch = _batch()
    junk = {k: v.clone() for k, v in batch.items()}
    strokes, lengths = junk["strokes"], junk["lengths"]
    for b, n in enumerate(lengths.tolist()):
        strokes[b, n + 1:, 0:2] = torch.randn(strokes.shape[1] - n - 1, 2) * 5
    for training in (True, False):
        model.train(training)
        torch.manual_seed(7)
        clean = model.loss(batch)
        torch.manual_seed(7)
        noisy = model.loss(junk)
        torch.testing.assert_close(clean["offset_nll"], noisy["offset_nll"])
        torch.testing.assert_close(clean["kl"], noisy["kl"])  # the encoder stops at each length
        if training:  # padding offsets feed later decoder steps, whose pen predictions count in training
            assert not torch.allclose(clean["pen_ce"], noisy["pen_ce"])
        else:
            torch.testing.assert_close(clean["pen_ce"], noisy["pen_ce"])


@torch.no_grad()
def test_the_loss_is_a_mean_over_the_padded_length():
    model = _model().eval()
    short, long = _batch(pad_to="batch"), _batch(max_seq_len=20)
    torch.manual_seed(3)
    a = model.loss(short)
    torch.manual_seed(3)
    b = model.loss(long)
    t_short, t_long = short["strokes"].shape[1] - 1, long["strokes"].shape[1] - 1
    assert (t_short, t_long) == (9, 20)
    assert float(a["recon"]) * t_short == pytest.approx(float(b["recon"]) * t_long, rel=1e-5)


# -- KL -------------------------------------------------------------------------------------------

def test_kl_annealing_follows_magenta():
    assert kl_weight_at(0, 0.5, 0.01, 0.99995) == pytest.approx(0.01)
    half_life = math.log(0.5) / math.log(0.99995)
    assert kl_weight_at(round(half_life), 0.5, 0.01, 0.99995) == pytest.approx(0.255, abs=1e-4)
    assert kl_weight_at(10 ** 7, 0.5, 0.01, 0.99995) == pytest.approx(0.5)
    weights = [kl_weight_at(s, 0.5, 0.01, 0.99995) for s in range(0, 100_000, 5_000)]
    assert weights == sorted(weights)


@pytest.mark.parametrize("mu_bias,expected_kl", [(0.0, 0.2), (3.0, 4.5)])
@torch.no_grad()
def test_kl_is_floored_at_the_tolerance(mu_bias, expected_kl):
    """A posterior equal to the prior has KL 0, floored to kl_tolerance; mu = 3 gives 9 / 2 per dimension."""
    model = _model()
    with torch.no_grad():
        for layer in (model.enc_mu, model.enc_presig):
            layer.weight.zero_()
            layer.bias.zero_()
        model.enc_mu.bias.fill_(mu_bias)
    out = model.loss(_batch(), step=0)
    assert float(out["kl"]) == pytest.approx(expected_kl, rel=1e-6)
    assert float(out["kl_raw"]) == pytest.approx(expected_kl if mu_bias else 0.0, abs=1e-6)
    assert float(out["loss"]) == pytest.approx(float(out["recon"]) + 0.01 * expected_kl, rel=1e-6)


# -- dropout --------------------------------------------------------------------------------------

@torch.no_grad()
def test_dropout_is_active_in_training_only():
    model = _model(use_input_dropout=True, use_output_dropout=True, input_dropout=0.3, output_dropout=0.3)
    batch = _batch()
    x = batch["strokes"][:, :-1]
    z = torch.randn(x.shape[0], TINY["z_size"])

    def run():
        return model.decode_params(x, z, model.initial_state(z, x.shape[0], x))[0].mu1

    model.eval()
    torch.testing.assert_close(run(), run())
    model.train()
    assert not torch.allclose(run(), run())


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("input_dropout", [False, True])
def test_the_decoder_reads_z_at_every_step(cell, input_dropout):
    # z enters as a per-sequence context projected once (or, under input dropout, appended to every
    # step's input and dropped with it): either way the decoder computes magenta's cell over [x_t, z]
    model = _model(dec_model=cell, use_input_dropout=input_dropout, input_dropout=0.3).double().train()
    x = _batch()["strokes"][:, :-1].double()
    z = torch.randn(x.shape[0], TINY["z_size"], dtype=torch.float64)
    state = model.initial_state(z, x.shape[0], x)
    torch.manual_seed(3)
    got = model.decode_params(x, z, state)[0].mu1
    torch.manual_seed(3)
    inputs = model.input_dropout(torch.cat([x, z.unsqueeze(1).expand(-1, x.shape[1], -1)], dim=-1))
    if input_dropout:
        assert (inputs[..., 5:] == 0).any()  # z's entries are dropped per step, so z cannot be projected once
    out, _ = model.decoder.run(inputs.transpose(0, 1), state)
    expected = split_params(model.output(out.transpose(0, 1)).float(), M).mu1  # the model's float32 read-out
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-7)


# -- sampling -------------------------------------------------------------------------------------

def test_adjust_temp_matches_magenta():
    pdf = np.array([0.1, 0.2, 0.7])
    for temp in (0.1, 0.5, 1.0, 2.0):
        expected = np.exp(np.log(pdf) / temp - (np.log(pdf) / temp).max())
        expected /= expected.sum()
        np.testing.assert_allclose(adjust_temp(torch.tensor(pdf), temp).numpy(), expected, rtol=1e-10)


def _one_component(n: int, sigma1=0.5, sigma2=2.0, corr=0.6) -> Mixture:
    full = lambda v: torch.full((n, 1), v, dtype=torch.float64)  # noqa: E731
    return Mixture(full(1.0), full(1.0), full(-2.0), full(sigma1), full(sigma2), full(corr),
                   torch.tensor([[2.0, 1.0, 0.0]], dtype=torch.float64).expand(n, 3))


@pytest.mark.parametrize("temperature", [1.0, 0.25])
def test_sampled_offsets_scale_sigma_by_the_temperature(temperature):
    """magenta passes sqrt(T) to sample_gaussian_2d, which multiplies sigma by its square: std = sigma * T."""
    gen = torch.Generator().manual_seed(0)
    rows = sample_step(_one_component(40_000), temperature, generator=gen)
    dx, dy = rows[:, 0].numpy(), rows[:, 1].numpy()
    assert dx.mean() == pytest.approx(1.0, abs=0.02) and dy.mean() == pytest.approx(-2.0, abs=0.05)
    assert dx.std() == pytest.approx(0.5 * temperature, rel=0.03)
    assert dy.std() == pytest.approx(2.0 * temperature, rel=0.03)
    assert np.corrcoef(dx, dy)[0, 1] == pytest.approx(0.6, abs=0.02)
    pen = rows[:, 2:].numpy()
    assert np.all(pen.sum(1) == 1)
    expected = adjust_temp(torch.softmax(torch.tensor([2.0, 1.0, 0.0], dtype=torch.float64), 0), temperature)
    np.testing.assert_allclose(pen.mean(0), expected.numpy(), atol=0.01)


def test_greedy_sampling_takes_the_means_and_argmaxes():
    rows = sample_step(_one_component(2), temperature=0.0, greedy=True)
    torch.testing.assert_close(rows, torch.tensor([[1.0, -2.0, 1, 0, 0]] * 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="temperature"):
        sample_step(_one_component(2), temperature=0.0)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("conditional", [True, False])
def test_decode_returns_stroke3_sketches(cell, conditional):
    model = _model(dec_model=cell, conditional=conditional, max_seq_len=15).eval()
    sketches = model.sample(5, temperature=0.5)
    assert len(sketches) == 5
    for s in sketches:
        assert s.dtype == np.float32 and s.ndim == 2 and s.shape[1] == 3 and len(s) <= 15
        assert np.all(np.isfinite(s)) and set(np.unique(s[:, 2])) <= {0.0, 1.0}
    greedy = [model.sample(2, greedy=True, max_len=6) for _ in range(2)]
    if not conditional:  # no random z: greedy decoding is deterministic
        for a, b in zip(*greedy):
            np.testing.assert_array_equal(a, b)


def test_decode_stops_at_the_end_of_sketch_and_cuts_it():
    model = _model(conditional=False)
    with torch.no_grad():  # the pen always says "end of sketch"
        model.output.weight.zero_()
        model.output.bias.zero_()
        model.output.bias[2] = 50.0
    assert [len(s) for s in model.decode(None, n=3, temperature=1.0)] == [0, 0, 0]


def test_reconstruct_and_decode_errors():
    model = _model().eval()
    batch = _batch()
    recon = model.reconstruct(batch, temperature=0.1, max_len=8)
    assert len(recon) == len(batch["lengths"])
    with pytest.raises(ValueError, match="latent codes"):
        model.decode(None, n=2)
    with pytest.raises(ValueError, match="latent codes"):
        model.decode(torch.zeros(2, 7))
    with pytest.raises(ValueError, match="takes no z"):
        _model(conditional=False).decode(torch.zeros(2, 4))
    with pytest.raises(ValueError, match="dec_model must be one of"):
        SketchRNN(dec_model="gru")
    with pytest.raises(ValueError, match="'strokes' and 'lengths'"):
        model.loss({"strokes": batch["strokes"]})


def test_split_params_rejects_a_wrong_width():
    with pytest.raises(ValueError, match="expected 21 outputs"):
        split_params(torch.zeros(2, 20), 3)


def test_bf16_autocast_keeps_the_loss_in_float32():
    model = _model(dec_model="hyper")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model.loss(_batch())
    assert out["loss"].dtype == torch.float32 and torch.isfinite(out["loss"])


# -- real data --------------------------------------------------------------------------------------

def test_overfits_a_few_real_sheep(shared_data):
    path = shared_data / "sketch-rnn-datasets" / "aaron_sheep.npz"
    if not path.exists():
        pytest.skip(f"{path} not found")
    data = np.load(path, allow_pickle=True, encoding="latin1")
    train = [np.asarray(s, dtype=np.float32) for s in data["train"][:500]]
    scale = scale_factor(train)
    sketches = [s.copy() for s in sorted(train[:100], key=len)[:8]]  # short ones, for speed
    for s in sketches:
        s[:, 0:2] /= scale
    batch = Stroke5Collate(250, pad_to="batch")(sketches)
    torch.manual_seed(0)
    model = SketchRNN(enc_rnn_size=32, dec_rnn_size=64, z_size=16, num_mixture=5)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for step in range(80):
        out = model.loss(batch, step)
        optimizer.zero_grad()
        out["loss"].backward()
        torch.nn.utils.clip_grad_value_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(out["loss"].item())
    assert np.mean(losses[-5:]) < 0.6 * losses[0], losses[::10]


def test_default_validation_is_magentas_valid_cost():
    """Defaults: the pen loss is unmasked in eval mode and the KL weight stays at kl_weight_start."""
    torch.manual_seed(0)
    sizes = {k: v for k, v in TINY.items() if k not in ("mask_pen_in_eval", "eval_kl_weight")}
    model = SketchRNN(**sizes)
    batch = Stroke5Collate(max_seq_len=12)(random_sketches((5, 9, 3)))
    model.train()
    torch.manual_seed(1)
    train = model.loss(batch, step=10_000)
    model.eval()
    torch.manual_seed(1)
    with torch.no_grad():
        valid = model.loss(batch, step=10_000)
    assert float(valid["kl_weight"]) == pytest.approx(model.kl_weight_start)
    assert float(train["kl_weight"]) == pytest.approx(model.kl_weight_at(10_000))
    masked = SketchRNN(**{**sizes, "mask_pen_in_eval": True})
    masked.load_state_dict(model.state_dict())
    masked.eval()
    torch.manual_seed(1)
    with torch.no_grad():
        assert float(masked.loss(batch)["pen_ce"]) < float(valid["pen_ce"])  # unmasked counts the padding too
