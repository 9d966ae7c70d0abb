"""The fused lstm/layer_norm/hyper recurrences (one autograd Function each, hand-written backward) against eager."""

import pytest
import torch

from sketchlab.models.sketch_rnn import SketchRNN
from sketchlab.models.sketch_rnn.cells import make_cell
from sketchlab.models.sketch_rnn import fused, recurrence
from sketchlab.models.sketch_rnn.fused import fused_run, fused_run_many
from sketchlab.models.sketch_rnn.recurrence import CellRunner, reverse_sequence, run_loop


def _grads(module, loss):
    params = [p for p in module.parameters() if p.requires_grad]
    return torch.autograd.grad(loss, params, allow_unused=True)


HYPER = dict(hyper_num_units=6, hyper_embedding_size=3)


def _cell(kind, input_size, hidden, recurrent_dropout=0.0):
    return make_cell(kind, input_size, hidden, recurrent_dropout, **(HYPER if kind == "hyper" else {}))


@pytest.mark.parametrize("kind", ["lstm", "layer_norm", "hyper"])
@pytest.mark.parametrize("with_lengths", [False, True])
@pytest.mark.parametrize("plain_layout", [False, True])  # both weight layouts, whichever this CPU prefers
def test_fused_run_matches_the_loop_in_float64(kind, with_lengths, plain_layout, monkeypatch):
    monkeypatch.setattr(fused, "_mkl_prefers_plain_layout", lambda: plain_layout)
    torch.manual_seed(0)
    cell = _cell(kind, 5, 8, recurrent_dropout=0.3).double().train()
    if kind == "hyper":  # away from magenta's init (beta_w = zw_w = 0), so every path carries gradient
        with torch.no_grad():
            for p in cell.parameters():
                p.add_(0.3 * torch.randn_like(p))
    x = torch.randn(7, 3, 5, dtype=torch.float64)
    flat = torch.randn(3, cell.state_size, dtype=torch.float64)
    state0 = tuple(s.clone().requires_grad_() for s in cell.state_from_flat(flat))  # (h, c[, hyper_h, hyper_c])
    lengths = torch.tensor([7, 2, 5]) if with_lengths else None
    out_w = torch.randn(7, 3, 8, dtype=torch.float64)
    state_w = [torch.randn_like(s) for s in state0]
    results = []
    for run in ("loop", "fused"):
        torch.manual_seed(1)  # the same dropout masks
        if run == "loop":
            out, state = run_loop(cell, x, state0, lengths=lengths)
        else:
            out, state = fused_run(cell, x, state0, lengths)
        assert len(state) == len(state0)
        # every final state enters the loss (squared for h: a gradient that depends on the value)
        loss = (out * out_w).sum() + (state[0] ** 2).sum() + sum((s * w).sum() for s, w in zip(state, state_w))
        grads = torch.autograd.grad(loss, [*cell.parameters(), *state0])
        results.append((out.detach(), [s.detach() for s in state], grads))
    (o1, s1, g1), (o2, s2, g2) = results
    assert all(g.abs().sum() > 0 for g in g1)  # nothing is compared vacuously
    for a, b in [(o1, o2), *zip(s1, s2), *zip(g1, g2)]:
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("lengths", [None, [7, 2, 5, 1], [3, 2, 3, 1]])
@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_plain_lstms_run_together_as_they_run_alone(lengths, dropout):
    # the encoder's two directions as one Function, skipping padding (live rows only; [3, 2, 3, 1] ends
    # before T = 7): outputs, final states and every gradient as two separate eager loops
    torch.manual_seed(0)
    cells = [_cell("lstm", 5, 8, dropout).double().train() for _ in range(2)]
    lengths = None if lengths is None else torch.tensor(lengths)
    x = torch.randn(7, 4, 5, dtype=torch.float64)
    xs = [x, x if lengths is None else reverse_sequence(x, lengths)]
    starts = [tuple(s.clone().requires_grad_() for s in torch.randn(2, 4, 8, dtype=torch.float64)) for _ in cells]
    out_w = torch.randn(2, 7, 4, 8, dtype=torch.float64)
    state_w = torch.randn(2, 2, 4, 8, dtype=torch.float64)
    results = []
    for together in (False, True):
        torch.manual_seed(1)  # the same dropout masks, drawn cell after cell
        if together:
            runs = fused_run_many(cells, xs, starts, lengths)
        else:
            runs = [run_loop(c, xi, s0, lengths=lengths) for c, xi, s0 in zip(cells, xs, starts)]
        loss = sum((out * out_w[g]).sum() + (state[0] ** 2).sum() + (state[0] * state_w[g, 0]).sum()
                   + (state[1] * state_w[g, 1]).sum() for g, (out, state) in enumerate(runs))
        leaves = [p for c in cells for p in c.parameters()] + [s for start in starts for s in start]
        results.append(([o.detach() for o, _ in runs], [s.detach() for _, st in runs for s in st],
                        torch.autograd.grad(loss, leaves)))
    (o1, s1, g1), (o2, s2, g2) = results
    assert all(g.abs().sum() > 0 for g in g1)
    for a, b in [*zip(o1, o2), *zip(s1, s2), *zip(g1, g2)]:
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-10)


def test_fused_runs_refuse_an_empty_sequence_and_mixed_cells():
    cell = _cell("lstm", 5, 8)
    x = torch.randn(4, 2, 5)
    with pytest.raises(ValueError, match="at least one step"):
        fused_run(cell, x, cell.zero_state(2, x), torch.tensor([3, 0]))
    with pytest.raises(TypeError, match="plain LSTMCells of one size"):
        fused_run_many([cell, _cell("lstm", 5, 6)], [x, x], [cell.zero_state(2, x)] * 2)


def _model_losses(dec, dtype=torch.float32, training=True):
    """Loss and every parameter's gradient of a tiny SketchRNN (encoder and decoder ``dec``), eager and auto."""
    models = {}
    for fast in (False, "auto"):
        torch.manual_seed(0)
        models[fast] = SketchRNN(enc_rnn_size=6, dec_rnn_size=10, z_size=4, num_mixture=3, enc_model=dec,
                                 dec_model=dec, max_seq_len=12, fast=fast, **HYPER).train(training).to(dtype)
    assert models["auto"].decoder.path() == "fused" and models["auto"].enc_fw.path() == "fused"
    assert models[False].decoder.path() == "eager"
    strokes = torch.zeros(4, 13, 5)
    strokes[:, 0, 2] = 1
    torch.manual_seed(5)
    lengths = torch.tensor([12, 3, 7, 9])
    for b, n in enumerate(lengths):
        strokes[b, 1:n + 1, :2] = torch.randn(int(n), 2)
        strokes[b, 1:n + 1, 2] = 1
        strokes[b, n + 1:, 4] = 1
    batch = {"strokes": strokes.to(dtype), "lengths": lengths}
    out = {}
    for fast, model in models.items():
        torch.manual_seed(3)  # same dropout masks and z noise
        loss = model.loss(batch, step=10)["loss"]
        assert loss.dtype == dtype
        out[fast] = (loss.detach(), _grads(model, loss))
    assert all(g is not None for g in out["auto"][1])  # every parameter is reached
    return out


@pytest.mark.parametrize("dec", ["lstm", "layer_norm", "hyper"])
def test_fast_auto_model_loss_and_every_gradient_match_eager(dec):
    out = _model_losses(dec)
    # float32: the fused paths group some sums differently from the loop, so equal to rounding
    torch.testing.assert_close(out["auto"][0], out[False][0], rtol=1e-6, atol=0)
    for a, b in zip(out["auto"][1], out[False][1]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("dec", ["lstm", "layer_norm", "hyper"])
@pytest.mark.parametrize("training", [True, False])
def test_fast_auto_model_matches_eager_in_float64(dec, training, monkeypatch):
    # the model casts its batch and mixture parameters to float32 with .float(); made a no-op here so
    # that the whole model (encoder, decoder, mixture loss) runs in float64. Eval mode: no dropout masks
    monkeypatch.setattr(torch.Tensor, "float", lambda self: self)
    out = _model_losses(dec, torch.float64, training)
    torch.testing.assert_close(out["auto"][0], out[False][0], rtol=1e-12, atol=0)
    for a, b in zip(out["auto"][1], out[False][1]):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_fast_auto_picks_fused_for_every_cell_but_not_under_autocast_and_rejects_bad_values(monkeypatch):
    for kind in ("lstm", "layer_norm", "hyper"):
        assert CellRunner(_cell(kind, 5, 8), fast="auto").path() == "fused"
    lstm = CellRunner(make_cell("lstm", 5, 8), fast="auto")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert lstm.path() == "eager"
    hyper = CellRunner(_cell("hyper", 5, 8), fast="auto")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert hyper.path() == "eager"
    assert lstm.path() == "fused"
    assert CellRunner(make_cell("lstm", 5, 8), fast="false").path() == "eager"
    # a wide hyper cell on a large batch runs the loop unless freed memory is kept (the fused path's large
    # tapes pay page faults otherwise, see FUSED_HYPER_MAX_WORK); the plain and layer-norm cells stay
    # fused at any size
    wide = CellRunner(_cell("hyper", 5, 512), fast="auto")
    monkeypatch.setattr(recurrence, "freed_memory_kept", lambda: False)
    assert wide.path(16) == "fused" and wide.path(100) == "eager" and wide.path() == "fused"
    assert CellRunner(_cell("layer_norm", 5, 512), fast="auto").path(100) == "fused"
    monkeypatch.setattr(recurrence, "freed_memory_kept", lambda: True)
    assert wide.path(16) == "fused" and wide.path(100) == "fused"
    assert CellRunner(make_cell("lstm", 5, 8), fast=True).train().path() == "native"  # True: the GPU paths
    with pytest.raises(ValueError, match="fast must be false, true or auto"):
        CellRunner(make_cell("lstm", 5, 8), fast="fastest")


def test_a_wide_hyper_cell_on_a_large_batch_runs_the_loop_bit_for_bit(monkeypatch):
    monkeypatch.setattr(recurrence, "freed_memory_kept", lambda: False)  # as in a process that hands it back
    torch.manual_seed(0)
    cell = _cell("hyper", 5, 512, recurrent_dropout=0.1).train()
    x, runner = torch.randn(3, 100, 5), CellRunner(cell, fast="auto")
    state = cell.zero_state(100, x)
    torch.manual_seed(1)
    out, _ = runner.run(x, state)
    torch.manual_seed(1)
    ref, _ = run_loop(cell, x, state)
    assert torch.equal(out, ref)


def test_the_weight_layout_follows_the_cpu_vendor_and_keeps_the_matrix(tmp_path):
    intel, amd = tmp_path / "intel", tmp_path / "amd"
    intel.write_text("processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t: avx512f\n")
    amd.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\n")
    assert fused._mkl_prefers_plain_layout(str(intel)) is True
    assert fused._mkl_prefers_plain_layout(str(amd)) is False
    assert fused._mkl_prefers_plain_layout(str(tmp_path / "missing")) is False  # not Linux: the old layout
    w = torch.randn(2, 4, 12)
    for plain in (False, True):
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(fused, "_mkl_prefers_plain_layout", lambda plain=plain: plain)
            step, back = fused._step_weight(w), fused._back_weight(w)
        assert torch.equal(step, w) and torch.equal(back, w.transpose(1, 2))
        assert step.is_contiguous() == plain and back.is_contiguous() == plain
