"""The fast paths (native LSTM kernel, torch.compile'd steps) compute what the eager reference computes."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from sketchlab.data.stroke5 import Stroke5Collate
from sketchlab.models.sketch_rnn import SketchRNN
from sketchlab.models.sketch_rnn.cells import LSTMCell, make_cell
from sketchlab.models.sketch_rnn.recurrence import CellRunner, bidirectional_final_hidden

TINY = dict(enc_rnn_size=8, dec_rnn_size=12, z_size=4, num_mixture=3, hyper_num_units=6, hyper_embedding_size=3)


def _batch() -> dict[str, torch.Tensor]:
    rng = np.random.default_rng(0)
    sketches = []
    for n in (5, 9, 3, 7):
        s = np.column_stack([rng.normal(size=(n, 2)), rng.random(n) < 0.25]).astype(np.float32)
        s[-1, 2] = 1
        sketches.append(s)
    return Stroke5Collate(10)(sketches)


def _pair(device: str = "cpu", **kw) -> tuple[SketchRNN, SketchRNN]:
    torch.manual_seed(0)
    eager = SketchRNN(**{**TINY, **kw}).to(device)
    fast = SketchRNN(fast=True, **{**TINY, **kw}).to(device)
    fast.load_state_dict(eager.state_dict())
    return eager, fast


def _assert_same_loss_and_grads(eager: SketchRNN, fast: SketchRNN, batch, training: bool, atol=1e-5) -> None:
    eager.train(training)
    fast.train(training)
    outs = []
    for model in (eager, fast):
        model.zero_grad()
        torch.manual_seed(11)  # same z noise and dropout masks on both paths
        out = model.loss(batch, step=100)
        out["loss"].backward()
        outs.append(out)
    for key in ("loss", "offset_nll", "pen_ce", "kl"):
        torch.testing.assert_close(outs[0][key], outs[1][key], atol=atol, rtol=1e-5)
    for (name, p), q in zip(eager.named_parameters(), fast.parameters()):
        torch.testing.assert_close(p.grad, q.grad, atol=atol, rtol=1e-4, msg=lambda m, name=name: f"{name}: {m}")


def _cells(input_size=5, hidden=6) -> tuple[LSTMCell, LSTMCell]:
    torch.manual_seed(1)
    cells = LSTMCell(input_size, hidden), LSTMCell(input_size, hidden)
    with torch.no_grad():
        for c in cells:
            c.bias.normal_()  # magenta's biases start at zero; make the gate order matter
    return cells


def test_native_lstm_matches_magenta_cell_with_gradients():
    cell, _ = _cells()
    eager, native = CellRunner(cell), CellRunner(cell, fast=True)
    assert native.uses_native() and not eager.uses_native()
    x = torch.randn(7, 3, 5)
    state = (torch.randn(3, 6), torch.randn(3, 6))
    results = []
    for runner in (eager, native):
        cell.zero_grad()
        out, (h, c) = runner.run(x, state)
        (out.square().sum() + c.sum()).backward()
        results.append((out, h, c, [p.grad.clone() for p in cell.parameters()]))
    (o1, h1, c1, g1), (o2, h2, c2, g2) = results
    torch.testing.assert_close(o1, o2)
    torch.testing.assert_close(h1, h2)
    torch.testing.assert_close(c1, c2)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_native_bidirectional_encoder_matches_with_lengths():
    fw, bw = _cells()
    x, lengths = torch.randn(6, 4, 5), torch.tensor([6, 1, 3, 4])
    eager = bidirectional_final_hidden(CellRunner(fw), CellRunner(bw), x, lengths)
    native = bidirectional_final_hidden(CellRunner(fw, fast=True), CellRunner(bw, fast=True), x, lengths)
    torch.testing.assert_close(eager, native)


def test_native_lstm_is_used_only_without_recurrent_dropout():
    runner = CellRunner(LSTMCell(5, 6, recurrent_dropout=0.1), fast=True)
    assert not runner.train().uses_native()
    assert runner.eval().uses_native()
    assert CellRunner(LSTMCell(5, 6, recurrent_dropout=0.0), fast=True).train().uses_native()


@pytest.mark.parametrize("training", [False, True])
def test_lstm_model_fast_equals_eager_without_recurrent_dropout(training):
    eager, fast = _pair(use_recurrent_dropout=False)
    _assert_same_loss_and_grads(eager, fast, _batch(), training)


def test_lstm_model_compiled_equals_eager_under_recurrent_dropout():
    eager, fast = _pair()
    batch = _batch()
    _assert_same_loss_and_grads(eager, fast, batch, training=True)
    _assert_same_loss_and_grads(eager, fast, batch, training=False)  # eval: native kernel


@pytest.mark.parametrize("kind", ["lstm", "layer_norm", pytest.param("hyper", marks=pytest.mark.slow)])
def test_compiled_step_equals_eager_with_recurrent_dropout(kind):
    torch.manual_seed(0)
    cell = make_cell(kind, 5, 6, recurrent_dropout=0.2, hyper_num_units=4, hyper_embedding_size=2).train()
    x = torch.randn(5, 3, 5)
    results = []
    for runner in (CellRunner(cell), CellRunner(cell, fast=True)):
        cell.zero_grad()
        torch.manual_seed(3)  # same dropout masks
        out, state = runner.run(x, cell.state_from_flat(torch.randn(3, cell.state_size)))
        (out.square().sum() + state[1].sum()).backward()
        results.append((out, state, [p.grad.clone() for p in cell.parameters()]))
    (o1, s1, g1), (o2, s2, g2) = results
    torch.testing.assert_close(o1, o2, atol=1e-5, rtol=1e-5)
    for a, b in zip(s1, s2):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_unknown_compile_mode_is_rejected():
    with pytest.raises(ValueError, match="unknown compile_mode 'fastest'"):
        SketchRNN(**TINY, fast=True, compile_mode="fastest")


@pytest.mark.gpu
@pytest.mark.parametrize("cell", ["lstm", "layer_norm", "hyper"])
def test_fast_equals_eager_on_cuda(cell):
    eager, fast = _pair("cuda", enc_model=cell, dec_model=cell)
    batch = {k: v.cuda() for k, v in _batch().items()}
    for training in (True, False):
        _assert_same_loss_and_grads(eager, fast, batch, training, atol=1e-4)


def test_a_used_fast_model_pickles_and_computes_the_same():
    _, fast = _pair(use_recurrent_dropout=False)
    fast.eval()
    batch = _batch()
    torch.manual_seed(2)
    before = fast.loss(batch)["loss"].detach()
    copy = pickle.loads(pickle.dumps(fast))
    torch.manual_seed(2)
    torch.testing.assert_close(copy.loss(batch)["loss"].detach(), before)
