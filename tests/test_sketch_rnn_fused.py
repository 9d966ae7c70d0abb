"""The fused lstm/layer_norm recurrence (one autograd Function, hand-written backward) against the eager loop."""

import pytest
import torch

from sketchlab.models.sketch_rnn import SketchRNN
from sketchlab.models.sketch_rnn.cells import make_cell
from sketchlab.models.sketch_rnn.fused import fused_run
from sketchlab.models.sketch_rnn.recurrence import CellRunner, run_loop


def _grads(module, loss):
    params = [p for p in module.parameters() if p.requires_grad]
    return torch.autograd.grad(loss, params, allow_unused=True)


@pytest.mark.parametrize("kind", ["lstm", "layer_norm"])
@pytest.mark.parametrize("with_lengths", [False, True])
def test_fused_run_matches_the_loop_in_float64(kind, with_lengths):
    torch.manual_seed(0)
    cell = make_cell(kind, 5, 8, recurrent_dropout=0.3).double().train()
    x = torch.randn(7, 3, 5, dtype=torch.float64)
    h0, c0 = (torch.randn(3, 8, dtype=torch.float64, requires_grad=True) for _ in range(2))
    lengths = torch.tensor([7, 2, 5]) if with_lengths else None
    out_w = torch.randn(7, 3, 8, dtype=torch.float64)
    results = []
    for run in ("loop", "fused"):
        torch.manual_seed(1)  # the same dropout masks
        if run == "loop":
            out, (h, c) = run_loop(cell, x, (h0, c0), lengths=lengths)
        else:
            out, (h, c) = fused_run(cell, x, (h0, c0), lengths)
        loss = (out * out_w).sum() + (h ** 2).sum() + (c * 0.3).sum()
        grads = torch.autograd.grad(loss, [*cell.parameters(), h0, c0])
        results.append((out.detach(), h.detach(), c.detach(), grads))
    (o1, h1, c1, g1), (o2, h2, c2, g2) = results
    for a, b in [(o1, o2), (h1, h2), (c1, c2), *zip(g1, g2)]:
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("dec", ["lstm", "layer_norm"])
def test_fast_auto_model_loss_and_every_gradient_match_eager(dec):
    models = {}
    for fast in (False, "auto"):
        torch.manual_seed(0)
        models[fast] = SketchRNN(enc_rnn_size=6, dec_rnn_size=10, z_size=4, num_mixture=3, enc_model=dec,
                                 dec_model=dec, max_seq_len=12, fast=fast).train()
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
    batch = {"strokes": strokes, "lengths": lengths}
    out = {}
    for fast, model in models.items():
        torch.manual_seed(3)  # same dropout masks and z noise
        loss = model.loss(batch, step=10)["loss"]
        out[fast] = (loss.detach(), _grads(model, loss))
    # the model computes in float32 (it casts the batch); float64 agreement is checked above
    torch.testing.assert_close(out["auto"][0], out[False][0], rtol=1e-6, atol=0)
    for a, b in zip(out["auto"][1], out[False][1]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_fast_auto_keeps_eager_for_hyper_and_under_autocast_and_rejects_bad_values():
    hyper = CellRunner(make_cell("hyper", 5, 8, hyper_num_units=4, hyper_embedding_size=2), fast="auto")
    assert hyper.path() == "eager"
    lstm = CellRunner(make_cell("lstm", 5, 8), fast="auto")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert lstm.path() == "eager"
    assert lstm.path() == "fused"
    assert CellRunner(make_cell("lstm", 5, 8), fast="false").path() == "eager"
    assert CellRunner(make_cell("lstm", 5, 8), fast=True).train().path() == "native"  # True: the GPU paths
    with pytest.raises(ValueError, match="fast must be false, true or auto"):
        CellRunner(make_cell("lstm", 5, 8), fast="fastest")
