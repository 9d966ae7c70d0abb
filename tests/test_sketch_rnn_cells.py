"""Sketch-RNN's cells against step-by-step float64 references written from magenta's rnn.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sketchlab.models.sketch_rnn.cells import (HyperLSTMCell, LayerNormLSTMCell, LSTMCell, lstm_ortho_, make_cell,
                                               orthogonal, project)
from sketchlab.models.sketch_rnn.recurrence import reverse_sequence, run_loop

X, N, B, T = 5, 6, 3, 4


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().numpy()


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def ln(x, gamma, beta, eps=1e-3):
    """magenta's layer_norm: mean/var over the last axis, rsqrt(var + eps)."""
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return gamma * (x - mean) / np.sqrt(var + eps) + beta


def ln_all(h, gamma, beta, base=4):
    """magenta's layer_norm_all: reshape to (B, base, n), normalise each block, one affine over 4n."""
    b, width = h.shape
    blocks = h.reshape(b, base, width // base)
    mean = blocks.mean(-1, keepdims=True)
    var = ((blocks - mean) ** 2).mean(-1, keepdims=True)
    return gamma * ((blocks - mean) / np.sqrt(var + 1e-3)).reshape(b, width) + beta


def ref_lstm(cell, x, c, h, keep=None):
    """magenta LSTMCell.__call__: concat([x, h]) @ concat([W_xh, W_hh]) + bias; i, j, f, o."""
    hidden = np.concatenate([x, h], 1) @ np.concatenate([_np(cell.w_xh), _np(cell.w_hh)], 0) + _np(cell.bias)
    i, j, f, o = np.split(hidden, 4, 1)
    g = np.tanh(j) if keep is None else np.tanh(j) * keep
    new_c = c * sigmoid(f + 1.0) + sigmoid(i) * g
    return new_c, np.tanh(new_c) * sigmoid(o)


def ref_layer_norm(cell, x, h, c, keep=None):
    """magenta LayerNormLSTMCell.__call__ (no bias; ln_all on gates; ln_c on the memory)."""
    concat = np.concatenate([x, h], 1) @ np.concatenate([_np(cell.w_xh), _np(cell.w_hh)], 0)
    concat = ln_all(concat, _np(cell.ln_all_gamma), _np(cell.ln_all_beta))
    i, j, f, o = np.split(concat, 4, 1)
    g = np.tanh(j) if keep is None else np.tanh(j) * keep
    new_c = c * sigmoid(f + 1.0) + sigmoid(i) * g
    new_h = np.tanh(ln(new_c, _np(cell.ln_c_gamma), _np(cell.ln_c_beta))) * sigmoid(o)
    return new_h, new_c


def ref_hyper(cell, x, h, c, hyper_h, hyper_c, keep=None):
    """magenta HyperLSTMCell.__call__ with one hyper_norm per gate block (block k of the stacked params)."""
    emb = cell.hyper_embedding_size
    hyper_h, hyper_c = ref_layer_norm(cell.hyper_cell, np.concatenate([x, h], 1), hyper_h, hyper_c)

    def hyper_norm(layer, k, use_bias):
        zw = hyper_h @ _np(cell.zw_w)[:, k * emb:(k + 1) * emb] + _np(cell.zw_b)[k * emb:(k + 1) * emb]
        result = (zw @ _np(cell.alpha_w)[k]) * layer
        if use_bias:
            kb = k - 4
            zb = hyper_h @ _np(cell.zb_w)[:, kb * emb:(kb + 1) * emb]
            result = result + zb @ _np(cell.beta_w)[kb]
        return result

    xh = np.split(x @ _np(cell.w_xh), 4, 1)
    hh = np.split(h @ _np(cell.w_hh), 4, 1)
    bias = np.split(_np(cell.bias), 4)
    gates = [hyper_norm(xh[k], k, False) + hyper_norm(hh[k], 4 + k, True) + bias[k] for k in range(4)]
    concat = ln_all(np.concatenate(gates, 1), _np(cell.ln_all_gamma), _np(cell.ln_all_beta))
    i, j, f, o = np.split(concat, 4, 1)
    g = np.tanh(j) if keep is None else np.tanh(j) * keep
    new_c = c * sigmoid(f + 1.0) + sigmoid(i) * g
    new_h = np.tanh(ln(new_c, _np(cell.ln_c_gamma), _np(cell.ln_c_beta))) * sigmoid(o)
    return new_h, new_c, hyper_h, hyper_c


def _perturb(cell: torch.nn.Module) -> None:
    """Move every parameter off its (often constant) initial value so each one matters in the check."""
    torch.manual_seed(3)
    with torch.no_grad():
        for p in cell.parameters():
            p.add_(0.3 * torch.randn_like(p))


def _keep(shape) -> np.ndarray:
    rng = np.random.default_rng(1)
    return (rng.random(shape) < 0.9) / 0.9


@pytest.mark.parametrize("with_dropout", [False, True])
def test_lstm_step_matches_magenta_equations(with_dropout):
    cell = LSTMCell(X, N)
    _perturb(cell)
    rng = np.random.default_rng(0)
    x, h, c = rng.normal(size=(B, X)), rng.normal(size=(B, N)), rng.normal(size=(B, N))
    keep = _keep((B, N)) if with_dropout else None
    new_c, new_h = ref_lstm(cell, x, c, h, keep)
    t = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
    got_h, got_c = cell.step(cell.project_input(t(x)), (t(h), t(c)), None if keep is None else t(keep))
    np.testing.assert_allclose(_np(got_h), new_h, atol=1e-5)
    np.testing.assert_allclose(_np(got_c), new_c, atol=1e-5)


@pytest.mark.parametrize("with_dropout", [False, True])
def test_layer_norm_step_matches_magenta_equations(with_dropout):
    cell = LayerNormLSTMCell(X, N)
    _perturb(cell)
    rng = np.random.default_rng(0)
    x, h, c = rng.normal(size=(B, X)), rng.normal(size=(B, N)), rng.normal(size=(B, N))
    keep = _keep((B, N)) if with_dropout else None
    new_h, new_c = ref_layer_norm(cell, x, h, c, keep)
    t = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
    got_h, got_c = cell.step(cell.project_input(t(x)), (t(h), t(c)), None if keep is None else t(keep))
    np.testing.assert_allclose(_np(got_h), new_h, atol=1e-5)
    np.testing.assert_allclose(_np(got_c), new_c, atol=1e-5)


@pytest.mark.parametrize("with_dropout", [False, True])
def test_hyper_step_matches_magenta_equations(with_dropout):
    cell = HyperLSTMCell(X, N, hyper_num_units=7, hyper_embedding_size=3)
    _perturb(cell)
    rng = np.random.default_rng(0)
    x, h, c = rng.normal(size=(B, X)), rng.normal(size=(B, N)), rng.normal(size=(B, N))
    hh, hc = rng.normal(size=(B, 7)), rng.normal(size=(B, 7))
    keep = _keep((B, N)) if with_dropout else None
    expected = ref_hyper(cell, x, h, c, hh, hc, keep)
    t = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
    got = cell.step(cell.project_input(t(x)), (t(h), t(c), t(hh), t(hc)), None if keep is None else t(keep))
    for g, e in zip(got, expected):
        np.testing.assert_allclose(_np(g), e, atol=1e-5)


def test_sequence_with_lengths_freezes_state_after_the_last_step():
    torch.manual_seed(0)
    cell = LayerNormLSTMCell(X, N).eval()
    x = torch.randn(T, B, X)
    lengths = torch.tensor([4, 1, 2])
    _, (h, c) = run_loop(cell, x, cell.zero_state(B, x), lengths=lengths, collect=False)
    for b, n in enumerate(lengths.tolist()):
        state = cell.zero_state(1, x)
        for t in range(n):
            state = cell.step(cell.project_input(x[t, b:b + 1]), state)
        torch.testing.assert_close(h[b:b + 1], state[0])
        torch.testing.assert_close(c[b:b + 1], state[1])


def test_reverse_sequence_reverses_within_each_length():
    x = torch.arange(T * 2, dtype=torch.float32).reshape(T, 2, 1)
    out = reverse_sequence(x, torch.tensor([3, 4]))[..., 0]
    assert out[:, 0].tolist() == [4.0, 2.0, 0.0, 6.0]  # first 3 reversed, the padding step stays
    assert out[:, 1].tolist() == [7.0, 5.0, 3.0, 1.0]


def test_flat_state_layouts_follow_magenta():
    flat = torch.arange(2 * N, dtype=torch.float32).unsqueeze(0)
    h, c = LSTMCell(X, N).state_from_flat(flat)  # LSTMCell: [c, h]
    assert c[0, 0] == 0 and h[0, 0] == N
    h, c = LayerNormLSTMCell(X, N).state_from_flat(flat)  # LayerNormLSTMCell: [h, c]
    assert h[0, 0] == 0 and c[0, 0] == N
    hyper = HyperLSTMCell(X, N, hyper_num_units=7, hyper_embedding_size=3)
    assert hyper.state_size == 2 * (N + 7)
    h, c, hh, hc = hyper.state_from_flat(torch.arange(hyper.state_size, dtype=torch.float32).unsqueeze(0))
    assert (h[0, 0], hh[0, 0], c[0, 0], hc[0, 0]) == (0, N, N + 7, 2 * N + 7)  # [h, hyper_h, c, hyper_c]


def test_initialisation_follows_magenta():
    torch.manual_seed(0)
    cell = LSTMCell(X, N)
    for k in range(4):  # lstm_ortho_initializer: each gate block of W_hh is orthogonal
        block = cell.w_hh[:, k * N:(k + 1) * N]
        torch.testing.assert_close(block.T @ block, torch.eye(N), atol=1e-5, rtol=0)
    assert torch.all(cell.bias == 0)
    limit = np.sqrt(6 / (X + 4 * N))  # glorot uniform for W_xh
    assert cell.w_xh.abs().max() <= limit and cell.w_xh.abs().max() > 0.5 * limit
    hyper = HyperLSTMCell(X, N, hyper_num_units=7, hyper_embedding_size=3)
    assert torch.all(hyper.zw_w == 0) and torch.all(hyper.zw_b == 1)
    assert torch.allclose(hyper.alpha_w, torch.full_like(hyper.alpha_w, 0.1 / 3))
    assert torch.all(hyper.beta_w == 0) and 0.003 < hyper.zb_w.std() < 0.03
    # at initialisation alpha = 0.1 and beta = 0 for every block (Cooijmans' gamma 0.1)
    alpha = torch.einsum("ke,ken->kn", hyper.zw_b.reshape(8, 3), hyper.alpha_w)
    torch.testing.assert_close(alpha, torch.full((8, N), 0.1))


def test_orthogonal_of_a_wide_matrix_has_orthonormal_rows():
    q = orthogonal(3, 8)
    torch.testing.assert_close(q @ q.T, torch.eye(3), atol=1e-5, rtol=0)
    w = lstm_ortho_(torch.empty(3, 8))
    assert w.shape == (3, 8)


def test_recurrent_dropout_masks_only_in_training():
    cell = LSTMCell(X, N, recurrent_dropout=0.25)
    like = torch.zeros(1)
    masks = cell.train().dropout_masks(200, 10, like)
    assert masks is not None and masks.shape == (200, 10, N)
    values = torch.unique(masks)  # tf.nn.dropout scales the kept units by 1/keep
    torch.testing.assert_close(values, torch.tensor([0.0, 1 / 0.75]))
    assert abs(float((masks > 0).float().mean()) - 0.75) < 0.02
    assert cell.eval().dropout_masks(200, 10, like) is None
    assert LSTMCell(X, N, recurrent_dropout=0.0).train().dropout_masks(5, 2, like) is None


def test_dropout_masks_are_bernoullis_masks_and_leave_the_same_random_state():
    # the masks of earlier versions were torch.bernoulli(full(keep)) / keep: a run's random stream, and
    # so its losses, must not change with the faster draw
    cell = LSTMCell(X, N, recurrent_dropout=0.1).train()
    torch.manual_seed(7)
    masks = cell.dropout_masks(50, 16, torch.zeros(1))
    after = torch.get_rng_state()
    torch.manual_seed(7)
    expected = torch.bernoulli(torch.full((50, 16, N), 0.9)) / 0.9
    assert torch.equal(masks, expected)
    assert torch.equal(after, torch.get_rng_state())


@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("leading", [(3,), (7, 3)])
def test_a_context_is_projected_as_if_appended_to_every_step(with_bias, leading):
    torch.manual_seed(0)
    weight = torch.randn(5 + 4, 12, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(12, dtype=torch.float64, requires_grad=True) if with_bias else None
    x = torch.randn(*leading, 5, dtype=torch.float64)
    context = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    whole = torch.cat([x, context.expand(*leading, 4)], dim=-1)
    results = []
    for got in (project(x, weight, context, bias), project(whole, weight, None, bias)):
        assert got.shape == (*leading, 12)
        params = [weight, context] + ([bias] if with_bias else [])
        results.append((got.detach(), torch.autograd.grad((got ** 2).sum(), params)))
    (y1, g1), (y2, g2) = results
    torch.testing.assert_close(y1, y2, rtol=1e-12, atol=1e-12)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="must add up to the cell's input size 9"):
        project(x, weight, context[:, :3])


def test_bad_cell_arguments_are_rejected():
    with pytest.raises(ValueError, match="unknown cell 'gru'"):
        make_cell("gru", X, N)
    with pytest.raises(ValueError, match="drop probability"):
        LSTMCell(X, N, recurrent_dropout=0.9 + 0.1)
