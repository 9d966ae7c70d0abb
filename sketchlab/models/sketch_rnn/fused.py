"""The whole recurrence of magenta's LSTMCell / LayerNormLSTMCell as one autograd Function.

The eager loop leaves a chain of ~20 small autograd nodes per step, and its backward computes the
recurrent weight's gradient with one small matrix product per step. Here the forward runs without
building a graph, keeping each step's activations in preallocated ``(T, ...)`` buffers, and the
hand-written backward (BPTT) does per step only what the chain needs: a few element-wise products,
the layer-norm backward and one ``dgates @ W_hh^T``. Everything that does not depend on the chain
(activation derivatives) is computed for all steps at once before it, and the parameter gradients
(``W_hh``, the layer-norm gains and shifts) are batched products over all steps after it.

The maths is the cell's ``step`` exactly (same gate order ``i, j, f, o``, forget bias, recurrent
dropout on the candidate with the masks drawn up front, layer norm with epsilon 1e-3, the state
at each sequence's last step as its final state), so losses and gradients agree with the eager loop to rounding
(``tests/test_sketch_rnn_fused.py`` checks this in float64). Not for autocast: the runner falls back
to the loop there.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from sketchlab.models.sketch_rnn.cells import LN_EPS, LayerNormLSTMCell, LSTMCell, MagentaCell, State

FUSED_CELLS = (LSTMCell, LayerNormLSTMCell)


def supports_fused(cell: MagentaCell) -> bool:
    """Whether :func:`fused_run` can run ``cell`` (plain and layer-norm LSTMs; not the HyperLSTM)."""
    return type(cell) in FUSED_CELLS


def _ln_backward(grad: Tensor, x: Tensor, mean: Tensor, rstd: Tensor, n: int) -> Tensor:
    """Gradient of a layer norm without affine over the last ``n`` features, w.r.t. its input."""
    return torch.ops.aten.native_layer_norm_backward(grad, x, [n], mean, rstd, None, None,
                                                     [True, False, False])[0]


class _FusedLSTM(torch.autograd.Function):
    """Outputs ``(hs, cs)``: the states after every step, ``(T, B, hidden)`` each."""

    @staticmethod
    def forward(ctx, xp: Tensor, h0: Tensor, c0: Tensor, w_hh: Tensor, keep: Tensor | None, forget_bias: float,
                ln_all_gamma: Tensor | None, ln_all_beta: Tensor | None, ln_c_gamma: Tensor | None,
                ln_c_beta: Tensor | None) -> tuple[Tensor, Tensor]:
        steps, batch, four_n = xp.shape
        n = four_n // 4
        ln = ln_all_gamma is not None
        new = xp.new_empty
        hs, cs = new(steps + 1, batch, n), new(steps + 1, batch, n)  # states, the initial one first
        hs[0], cs[0] = h0, c0
        acts = new(steps, batch, 4, n)  # sigmoid(i), tanh(j), sigmoid(f + forget_bias), sigmoid(o)
        tanh_c = new(steps, batch, n)
        fb = torch.zeros(4, 1, dtype=xp.dtype, device=xp.device)
        fb[2] = forget_bias
        if ln:
            raw = new(steps, batch, 4, n)  # gate pre-activations before the layer norm
            ln_mean, ln_rstd = new(steps, batch, 4, 1), new(steps, batch, 4, 1)
            c_mean, c_rstd = new(steps, batch, 1), new(steps, batch, 1)
            gamma4 = ln_all_gamma.view(4, n)
            beta4 = ln_all_beta.view(4, n) + fb  # the forget bias folded into the shift
            raw_t = raw.view(steps, batch, four_n).unbind(0)
            ln_mean_t, ln_rstd_t, c_mean_t, c_rstd_t = (b.unbind(0) for b in (ln_mean, ln_rstd, c_mean, c_rstd))
            xp_t = xp.unbind(0)
        else:
            # the forget bias folded into the input projection
            xp_t = xp.view(steps, batch, 4, n).add(fb).view(steps, batch, four_n).unbind(0)
        hs_t, cs_t, acts_t, tanh_c_t = hs.unbind(0), cs.unbind(0), acts.unbind(0), tanh_c.unbind(0)
        keep_t = keep.unbind(0) if keep is not None else None
        h, c = h0, c0
        for t in range(steps):
            a = acts_t[t]
            if ln:
                g = torch.addmm(xp_t[t], h, w_hh, out=raw_t[t]).view(batch, 4, n)
                xhat, mean, rstd = torch.native_layer_norm(g, [n], None, None, LN_EPS)
                ln_mean_t[t].copy_(mean)
                ln_rstd_t[t].copy_(rstd)
                g = torch.addcmul(beta4, xhat, gamma4)
                torch.sigmoid(g, out=a)
                torch.tanh(g[:, 1], out=a[:, 1])  # the candidate's block has no forget bias
            else:
                g = torch.addmm(xp_t[t], h, w_hh).view(batch, 4, n)
                torch.sigmoid(g, out=a)
                torch.tanh(g[:, 1], out=a[:, 1])
            si, tj, sf, so = a.unbind(1)
            cand = tj * keep_t[t] if keep_t is not None else tj
            c = torch.addcmul(c * sf, si, cand, out=cs_t[t + 1])
            if ln:
                c_hat, mean, rstd = torch.native_layer_norm(c, [n], ln_c_gamma, ln_c_beta, LN_EPS)
                c_mean_t[t].copy_(mean)
                c_rstd_t[t].copy_(rstd)
                tc = torch.tanh(c_hat, out=tanh_c_t[t])
            else:
                tc = torch.tanh(c, out=tanh_c_t[t])
            h = torch.mul(tc, so, out=hs_t[t + 1])
        ctx.ln = ln
        ctx.set_materialize_grads(False)  # unused outputs (the encoder's) get no zero gradients
        saved = [w_hh, hs, cs, acts, tanh_c, keep]
        if ln:
            saved += [raw, ln_mean, ln_rstd, c_mean, c_rstd, ln_all_gamma, ln_c_gamma]
        ctx.save_for_backward(*saved)
        return hs[1:], cs[1:]

    @staticmethod
    @once_differentiable
    def backward(ctx, d_hs: Tensor | None, d_cs: Tensor | None) -> tuple:
        ln = ctx.ln
        w_hh, hs, cs, acts, tanh_c, keep, *rest = ctx.saved_tensors
        steps, batch, _, n = acts.shape
        si, tj, sf, so = acts.unbind(2)
        # every factor that does not depend on the chain, for all steps at once
        dsig = acts * (1 - acts)
        cand = tj * keep if keep is not None else tj
        coef_ijf = torch.stack([cand * dsig[:, :, 0],
                                si * (keep if keep is not None else 1) * (1 - tj * tj),
                                cs[:-1] * dsig[:, :, 2]], dim=2)  # d(c_new)/d(i, j, f pre-activations)
        coef_o = tanh_c * dsig[:, :, 3]  # d(h_new)/d(o pre-activation)
        coef_c = so * (1 - tanh_c * tanh_c)  # d(h_new)/d(tanh's input)
        d_gates = acts.new_empty(steps, batch, 4, n)  # w.r.t. the gates (after the layer norm, if any)
        if ln:
            raw, ln_mean, ln_rstd, c_mean, c_rstd, gamma, gamma_c = rest
            gamma4 = gamma.view(4, n)
            d_chat = torch.empty_like(tanh_c)  # w.r.t. the memory's layer-norm output, for its gain
            d_raw = acts.new_empty(steps, batch, 4, n)  # w.r.t. xp[t] + h @ W_hh
            # the memory before the layer norm is the stored state (no freezing inside this Function)
            c_new = cs[1:]
        else:
            d_raw = d_gates
        w_t = w_hh.t()
        dh = hs.new_zeros(batch, n)
        dc = hs.new_zeros(batch, n)
        d_hs_t = d_hs.unbind(0) if d_hs is not None else None
        d_cs_t = d_cs.unbind(0) if d_cs is not None else None
        d_gates_t, d_raw_t, sf_t = d_gates.unbind(0), d_raw.unbind(0), sf.unbind(0)
        coef_o_t, coef_c_t, coef_ijf_t = coef_o.unbind(0), coef_c.unbind(0), coef_ijf.unbind(0)
        for t in range(steps - 1, -1, -1):
            if d_hs_t is not None:
                dh = dh + d_hs_t[t]
            if d_cs_t is not None:
                dc = dc + d_cs_t[t]
            dg = d_gates_t[t]
            torch.mul(dh, coef_o_t[t], out=dg[:, 3])
            if ln:
                dch = torch.mul(dh, coef_c_t[t], out=d_chat[t])
                dc = dc + _ln_backward(dch * gamma_c, c_new[t], c_mean[t], c_rstd[t], n)
            else:
                dc = torch.addcmul(dc, dh, coef_c_t[t])
            torch.mul(coef_ijf_t[t], dc.unsqueeze(1), out=dg[:, :3])
            dc = dc * sf_t[t]
            if ln:
                d_raw_t[t].copy_(_ln_backward(dg * gamma4, raw[t], ln_mean[t], ln_rstd[t], n))
            dh = d_raw_t[t].view(batch, 4 * n) @ w_t
        flat_raw = d_raw.view(steps * batch, 4 * n)
        d_w = hs[:-1].reshape(steps * batch, n).t() @ flat_raw
        d_xp = d_raw.view(steps, batch, 4 * n)
        grads_ln: tuple = (None, None, None, None)
        if ln:
            xhat = (raw - ln_mean) * ln_rstd
            c_hat = (c_new - c_mean) * c_rstd
            grads_ln = ((d_gates * xhat).sum((0, 1)).reshape(4 * n), d_gates.sum((0, 1)).reshape(4 * n),
                        (d_chat * c_hat).sum((0, 1)), d_chat.sum((0, 1)))
        return (d_xp, dh, dc, d_w, None, None, *grads_ln)


def fused_run(cell: MagentaCell, x: Tensor, state: State, lengths: Tensor | None = None) -> tuple[Tensor, State]:
    """:func:`~sketchlab.models.sketch_rnn.recurrence.run_loop` of a (LayerNorm)LSTMCell as one Function.

    Same arguments and results as the loop (outputs ``(T, B, hidden)`` and the final state); draws the
    recurrent-dropout masks identically, so the random stream stays in step with the eager path.
    """
    if not supports_fused(cell):
        raise TypeError(f"fused_run runs LSTMCell and LayerNormLSTMCell, not {type(cell).__name__}")
    steps, batch = x.shape[0], x.shape[1]
    xp = cell.project_input(x)
    keep = cell.dropout_masks(steps, batch, xp)
    h0, c0 = state
    if isinstance(cell, LayerNormLSTMCell):
        ln = (cell.ln_all_gamma, cell.ln_all_beta, cell.ln_c_gamma, cell.ln_c_beta)
    else:
        ln = (None, None, None, None)
    hs, cs = _FusedLSTM.apply(xp.contiguous(), h0, c0, cell.w_hh, keep, float(cell.forget_bias), *ln)
    if lengths is None:
        return hs, (hs[-1], cs[-1])
    # dynamic_rnn's frozen states: outputs repeat the last live state, the final state is the one at
    # step lengths - 1. Steps past a length change nothing that is read, so they need no masking inside.
    last = (lengths.to(x.device) - 1).clamp(max=steps - 1)
    cols = torch.arange(batch, device=x.device)
    index = torch.minimum(torch.arange(steps, device=x.device).unsqueeze(1), last)  # (T, B)
    return hs[index, cols], (hs[last, cols], cs[last, cols])
