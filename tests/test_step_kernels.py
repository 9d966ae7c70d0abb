"""The C++ step kernels of the fused recurrences against the Python steps they replace (float32), in every
vector width this CPU runs; their build, switch and fallback."""

import warnings

import pytest
import torch

from sketchlab.models.sketch_rnn import fused, step_kernels
from sketchlab.models.sketch_rnn.cells import LN_EPS, make_cell
from sketchlab.models.sketch_rnn.fused import _LNTape, fused_run, fused_run_many

# this CPU's own width first; the narrower ones it can also run (an AVX-512 CPU runs AVX2 code)
_WIDTHS = {"AVX512": ["AVX512", "AVX2", "DEFAULT"], "AVX2": ["AVX2", "DEFAULT"]}.get(step_kernels.capability(),
                                                                                     ["DEFAULT"])


def _can_build() -> bool:
    from torch.utils.cpp_extension import is_ninja_available
    import shutil

    return shutil.which("c++") is not None and is_ninja_available()


@pytest.fixture(scope="module", params=_WIDTHS)
def kernels(request):
    if not _can_build():
        pytest.skip("no C++ compiler or ninja: the fused recurrences run their Python steps")
    return step_kernels.build(request.param)


def _close(a, b):
    torch.testing.assert_close(a, b, rtol=2e-5, atol=2e-6)


def _tape_pair(steps, batch, n, kernels):
    """Two tapes over the same gate pre-activations: one stepping in Python, one with the kernels."""
    py, cc = (_LNTape.empty(steps, batch, n, torch.empty(0)) for _ in range(2))
    py.raw.normal_()
    cc.raw.copy_(py.raw)
    py.kernels, cc.kernels = None, kernels
    return py, cc


@pytest.mark.parametrize("n", [37, 64])  # with and without a tail past the last full vector
@pytest.mark.parametrize("with_keep", [False, True])
def test_layer_norm_steps_match_the_python_steps(kernels, n, with_keep):
    torch.manual_seed(0)
    steps, batch = 4, 3
    py, cc = _tape_pair(steps, batch, n, kernels)
    gamma4, beta4 = torch.rand(4, n) + 0.5, torch.randn(4, n)
    gamma_c, beta_c = torch.rand(n) + 0.5, torch.randn(n)
    keep = (torch.rand(steps, batch, n) < 0.8).float() / 0.8 if with_keep else None
    cs = {k: torch.zeros(steps + 1, batch, n) for k in ("py", "cc")}
    # h written into a wider buffer, as the HyperLSTM keeps [h, hyper_h] side by side
    hs = {k: torch.zeros(steps + 1, batch, n + 5) for k in ("py", "cc")}
    for k in cs:
        cs[k][0] = torch.linspace(-1, 1, batch * n).view(batch, n)
    for t in range(steps):
        for k, tape in (("py", py), ("cc", cc)):
            tape.forward_step(t, cs[k][t], None if keep is None else keep[t], gamma4, beta4, gamma_c, beta_c,
                              cs[k][t + 1], hs[k][t + 1][:, :n])
    _close(cs["cc"], cs["py"])
    _close(hs["cc"], hs["py"])
    for a, b in zip(cc.tensors(), py.tensors()):
        _close(a, b)

    for tape, k in ((py, "py"), (cc, "cc")):
        tape.start_backward(cs[k], keep, gamma4, gamma_c)
    dh, dc = torch.randn(batch, n + 5)[:, :n], torch.randn(batch, n)  # dh strided, as the hyper backward's
    out = {}
    for k, tape in (("py", py), ("cc", cc)):
        d_h, d_c, raws = dh, dc, []
        for t in range(steps - 1, -1, -1):
            d_raw, d_c = tape.backward_step(t, d_h, d_c)
            raws.append(d_raw.clone())
            d_h = d_raw.sum(1)  # some recurrent gradient for the next step back
        out[k] = (torch.stack(raws), d_c, *tape.ln_grads())
    for a, b in zip(out["cc"], out["py"]):
        _close(a, b)


@pytest.mark.parametrize("kind", ["lstm", "layer_norm", "hyper"])
@pytest.mark.parametrize("with_lengths, training", [(False, True), (True, True), (True, False)])
def test_fused_function_with_kernels_is_as_accurate_as_without(kernels, kind, with_lengths, training, monkeypatch):
    """The whole Function (forward, backward, every parameter's gradient; the hyper cell's gate kernels, the
    plain LSTM's skipped padding), in float32 with and without the kernels, against the same run in float64."""
    torch.manual_seed(0)
    extra = dict(hyper_num_units=21, hyper_embedding_size=5) if kind == "hyper" else {}
    cell = make_cell(kind, 6, 37, 0.1, **extra).train(training)  # eval: no recurrent-dropout masks
    x, out_w = torch.randn(5, 3, 6), torch.randn(5, 3, 37)
    flat = torch.randn(3, cell.state_size)
    lengths = torch.tensor([2, 5, 4]) if with_lengths else None
    results = {}
    for mode, use, dtype in (("py", None, torch.float32), ("cc", kernels, torch.float32),
                             ("ref", None, torch.float64)):
        monkeypatch.setattr(fused, "kernels_for", lambda t, use=use: use)
        cell.to(dtype)
        torch.manual_seed(1)  # the same dropout masks
        start = tuple(s.clone().requires_grad_() for s in cell.state_from_flat(flat.to(dtype)))
        outs, final = fused_run(cell, x.to(dtype), start, lengths)
        loss = (outs * out_w.to(dtype)).sum() + sum(s.square().sum() for s in final)
        results[mode] = [outs.detach(), *torch.autograd.grad(loss, list(cell.parameters()) + list(start))]
    for cc, py, ref in zip(results["cc"], results["py"], results["ref"]):
        err_cc, err_py = ((r - ref).abs().max().item() for r in (cc.double(), py.double()))
        assert err_cc <= 4 * err_py + 1e-6, (err_cc, err_py)
        torch.testing.assert_close(cc, py, rtol=1e-4, atol=2e-5)


def test_plain_lstm_groups_with_kernels_match_them_without(kernels, monkeypatch):
    """The encoder's two directions in one loop (groups), with lengths: strided rows of every group."""
    torch.manual_seed(0)
    cells = [make_cell("lstm", 5, 19, 0.1).train() for _ in range(2)]
    xs = [torch.randn(6, 4, 5) for _ in cells]
    lengths = torch.tensor([6, 1, 3, 6])
    results = {}
    for mode, use in (("py", None), ("cc", kernels)):
        monkeypatch.setattr(fused, "kernels_for", lambda t, use=use: use)
        torch.manual_seed(1)
        starts = [tuple(torch.randn(4, 19).requires_grad_() for _ in range(2)) for _ in cells]
        outs = fused_run_many(cells, xs, starts, lengths)
        loss = sum((o * (i + 1)).sum() + st[0].square().sum() + st[1].sum() for i, (o, st) in enumerate(outs))
        params = [p for c in cells for p in c.parameters()] + [s for st in starts for s in st]
        results[mode] = [o.detach() for o, _ in outs] + list(torch.autograd.grad(loss, params))
    for cc, py in zip(results["cc"], results["py"]):
        torch.testing.assert_close(cc, py, rtol=1e-5, atol=1e-6)


def test_kernels_take_float32_cpu_tensors_only(kernels):
    raw = torch.zeros(2, 4, 8, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="float32 CPU tensors only"):
        kernels.ln_forward_step(raw, torch.zeros(2, 8), None, *[torch.zeros(4, 8)] * 2, *[torch.zeros(8)] * 2,
                                torch.zeros(2, 4), torch.zeros(2, 4), torch.zeros(2, 4, 8), torch.zeros(2),
                                torch.zeros(2), torch.zeros(2, 8), torch.zeros(2, 8), torch.zeros(2, 8), LN_EPS)
    assert step_kernels.kernels_for(torch.zeros(1, dtype=torch.float64)) is None  # the Python steps run these


@pytest.fixture
def fresh_choice():
    """A fresh per-process choice for the duration of a test, and this machine's own afterwards."""
    step_kernels._loaded.cache_clear()
    yield
    step_kernels._loaded.cache_clear()


def test_switched_off_by_the_environment(fresh_choice, monkeypatch):
    monkeypatch.setenv(step_kernels.ENV_SWITCH, "0")
    assert step_kernels.used() is None  # nothing asked yet
    assert step_kernels.kernels_for(torch.zeros(1)) is None
    assert step_kernels.used() == f"python (off ({step_kernels.ENV_SWITCH}=0))"


def test_a_failed_build_warns_and_falls_back_to_python(fresh_choice, monkeypatch):
    def broken(*_, **__):
        raise RuntimeError("Error building extension 'x'\nc++: fatal error: no input files")

    monkeypatch.delenv(step_kernels.ENV_SWITCH, raising=False)
    monkeypatch.setattr(step_kernels, "build", broken)
    with pytest.warns(RuntimeWarning, match="could not be built .*no input files.*Python steps run instead"):
        assert step_kernels.kernels_for(torch.zeros(1)) is None
    assert step_kernels.describe().startswith("python (not built: RuntimeError")


def test_a_stale_lock_left_by_a_killed_build_does_not_block(kernels):
    cap = kernels.__name__.rsplit("_", 1)[-1].upper()  # sketchlab_step_kernels_avx2 -> AVX2
    folder = step_kernels.build_directory(cap)
    (folder / "lock").touch()  # what torch leaves when a build is killed: its loader would wait for ever
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch warns after waiting on its lock file a while
        assert step_kernels.build(cap).__name__ == kernels.__name__
    assert not (folder / "lock").exists()


def test_the_build_flags_keep_ieee_maths():
    for cap in ("AVX512", "AVX2", "DEFAULT"):
        flags = step_kernels.build_flags(cap)
        assert f"-DCPU_CAPABILITY={cap}" in flags and not any("fast-math" in f or f == "-Ofast" for f in flags)


def test_kernels_give_the_same_bits_on_any_number_of_threads(kernels):
    """Rows run in parallel once a call has enough of them (here 200 rows); the results, including the
    layer norms' gradient sums, must not depend on how many threads share them."""
    torch.manual_seed(0)
    batch, n = 200, 37
    raw, c, keep = torch.randn(1, batch, 4, n), torch.randn(batch, n), (torch.rand(batch, n) < 0.9).float()
    gamma4, beta4, gamma_c, beta_c = torch.rand(4, n) + 0.5, torch.randn(4, n), torch.rand(n) + 0.5, torch.randn(n)
    dh, dc, d_raw = torch.randn(batch, n), torch.randn(batch, n), torch.randn(1, batch, 4 * n)
    alpha, beta, bias = torch.randn(8, batch, n), torch.randn(4, batch, n), torch.randn(4, n)
    xh, hh = torch.randn(batch, 4 * n), torch.randn(batch, 4 * n)

    def run():
        tape = _LNTape(raw.clone(), *(torch.empty(1, batch, 4, 1) for _ in range(2)), torch.empty(1, batch, 4, n),
                       *(torch.empty(1, batch, 1) for _ in range(2)), torch.empty(1, batch, n))
        tape.kernels = kernels
        cs, h = torch.stack([c, torch.empty_like(c)]), torch.empty(batch, n)
        tape.forward_step(0, cs[0], keep, gamma4, beta4, gamma_c, beta_c, cs[1], h)
        tape.start_backward(cs, keep.unsqueeze(0), gamma4, gamma_c)
        d_raw_ln, dc_ln = tape.backward_step(0, dh, dc)
        acts, c_out, tanh_c, h_out = torch.empty(1, batch, 4, n), *(torch.empty(1, batch, n) for _ in range(3))
        kernels.lstm_forward_step(d_raw, c.unsqueeze(0), keep.unsqueeze(0), acts, c_out, tanh_c, h_out)
        g_plain, dc_plain = torch.empty(1, batch, 4 * n), torch.empty(1, batch, n)
        kernels.lstm_backward_step(dh.unsqueeze(0), dc.unsqueeze(0), None, None, acts, tanh_c, c.unsqueeze(0),
                                   keep.unsqueeze(0), g_plain, dc_plain)
        gates, d_ab, d_hh = torch.empty(batch, 4, n), torch.empty(12, batch, n), torch.empty(batch, 4, n)
        kernels.hyper_gates_forward(alpha, beta, bias, xh, hh, gates)
        kernels.hyper_gates_backward(gates, xh, hh, alpha, d_ab, d_hh)
        return [*tape.tensors(), cs, h, d_raw_ln, dc_ln, *tape.ln_grads(), acts, c_out, tanh_c, h_out, g_plain,
                dc_plain, gates, d_ab, d_hh]

    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = run()
        torch.set_num_threads(2)
        two = run()
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(one, two):
        assert torch.equal(a, b)
