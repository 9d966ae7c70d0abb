"""The whole recurrence of magenta's LSTMCell / LayerNormLSTMCell / HyperLSTMCell as one autograd Function.

The eager loop leaves a chain of ~20 small autograd nodes per step (more for the HyperLSTM), and its
backward computes the recurrent weights' gradients with small matrix products per step. Here the
forward runs without building a graph, keeping each step's activations in preallocated ``(T, ...)``
buffers, and the hand-written backward (BPTT) does per step only what the chain needs: a few
element-wise products, the layer-norm backward and the products with the transposed recurrent weights
(for the HyperLSTM also the two small ones back through its embeddings). Everything that does not
depend on the chain (activation derivatives) is computed for all steps at once before it, and the
parameter gradients (recurrent weights, the HyperLSTM's embedding weights, the layer-norm gains and
shifts) are batched products over all steps after it.

Plain LSTMs run as groups (:func:`fused_run_many`): the encoder's two directions share one loop, with
batched products, which halves the small ops per step. Given sequence lengths, a plain LSTM skips the
padding as ``pack_padded_sequence`` does (the batch sorted by decreasing length, each step running the
sequences still going), and returns each sequence's final state from the Function itself.

The maths is the cell's ``step`` exactly (same gate order ``i, j, f, o``, forget bias, recurrent
dropout on the (main) candidate with the masks drawn up front, layer norm with epsilon 1e-3, the
state at each sequence's last step as its final state), so losses and gradients agree with the eager
loop to rounding (``tests/test_sketch_rnn_fused.py`` checks this in float64). The HyperLSTM's sums are
grouped differently from its ``step`` (one product for both recurrent inputs of its small network, the
bias added before the gate terms), so in float32 the two paths agree to rounding, not bit for bit.
Not for autocast: the runner falls back to the loop there.

On a CPU in float32 the element-wise work of each step (the plain and the layer-norm LSTM step forward and
back, the HyperLSTM's gate formation and its backward) runs in C++ kernels where they are built
(:mod:`~sketchlab.models.sketch_rnn.step_kernels`); the PyTorch code here is the reference they are
tested against, and runs everywhere else.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from sketchlab.machine import cpuinfo_field
from sketchlab.models.sketch_rnn.cells import (LN_EPS, HyperLSTMCell, LayerNormLSTMCell, LSTMCell, MagentaCell,
                                               State)
from sketchlab.models.sketch_rnn.step_kernels import kernels_for

FUSED_CELLS = (LSTMCell, LayerNormLSTMCell, HyperLSTMCell)


def supports_fused(cell: MagentaCell) -> bool:
    """Whether :func:`fused_run` can run ``cell`` (magenta's three cells, not subclasses of them)."""
    return type(cell) in FUSED_CELLS


def _ln_backward(grad: Tensor, x: Tensor, mean: Tensor, rstd: Tensor, n: int) -> Tensor:
    """Gradient of a layer norm without affine over the last ``n`` features, w.r.t. its input."""
    return torch.ops.aten.native_layer_norm_backward(grad, x, [n], mean, rstd, None, None,
                                                     [True, False, False])[0]


def _forget_shift(forget_bias: float, like: Tensor) -> Tensor:
    """``(4, 1)``: the forget bias on the ``f`` block, zero elsewhere (to fold into a per-gate shift)."""
    fb = torch.zeros(4, 1, dtype=like.dtype, device=like.device)
    fb[2] = forget_bias
    return fb


def _rows(b: int, *tensors: Tensor | None) -> tuple:
    """The first ``b`` batch rows of group-major tensors ``(G, B, ...)``; the tensors themselves when ``b`` is all."""
    return tuple(t if t is None or b == t.shape[1] else t[:, :b] for t in tensors)


@functools.cache
def _mkl_prefers_plain_layout(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this CPU runs the per-step products faster with weights in their plain row-major layout.

    MKL picks its small-product kernels by CPU, and the faster layout of the weight differs between them
    (measured at the issue-13 sizes, B 16, 1 thread): on an Intel Xeon (AVX-512, AMX) the plain
    ``(B, in) @ (in, out)`` and a contiguous transposed copy for the backward's ``(B, out) @ (out, in)`` are
    1.5-2x faster than the transposed layouts, while on the project's AMD EPYC VMs the transposed layout
    was the faster one (about 1.3x at B 16, in 256, out 1024). The choice is fixed per machine, never timed,
    so that a run repeats its own losses exactly.
    """
    return cpuinfo_field("vendor_id", cpuinfo) == "GenuineIntel"


def _step_weight(w: Tensor) -> Tensor:
    """``w`` (..., in, out) for the forward's per-step ``(B, in) @ (in, out)`` product, in this CPU's faster
    layout: ``w`` itself, or a view of its transposed copy (the same matrix; in the shapes of both presets,
    ``in`` 128-768, MKL's result was bit for bit the same in both layouts on the Intel Xeon)."""
    return w if _mkl_prefers_plain_layout() else w.transpose(-1, -2).contiguous().transpose(-1, -2)


def _back_weight(w: Tensor) -> Tensor:
    """``w`` (..., in, out) transposed, for the backward's per-step ``(B, out) @ (out, in)`` product: a
    contiguous copy where this CPU runs that faster, else a view. (The two layouts round differently when
    ``out`` is large, so the choice is per machine, never per run.)"""
    return w.transpose(-1, -2).contiguous() if _mkl_prefers_plain_layout() else w.transpose(-1, -2)


def _lstm_coefs(acts: Tensor, tanh_c: Tensor, c_prev: Tensor, keep: Tensor | None) -> Tensor:
    """The chain-independent factors of an LSTM's BPTT, for all steps at once.

    From the activations ``(..., 4, n)`` (sigmoid(i), tanh(j), sigmoid(f + forget_bias), sigmoid(o)),
    ``tanh_c`` (the tanh of the memory, or of its layer norm) and the memory before each step: one
    ``(..., 5, n)`` buffer of ``d(c_new)/d(i, j, f)``, ``d(h_new)/d(o)`` and ``d(h_new)/d(tanh's input)``.
    """
    # written into one buffer, no temporaries: on a CPU a fresh (T, B, ...) tensor costs page faults
    si, tj, sf, so = acts.unbind(-2)
    coefs = acts.new_empty(*acts.shape[:-2], 5, acts.shape[-1])
    ci, cj, cf, co, cc = coefs.unbind(-2)
    torch.addcmul(si, si, si, value=-1, out=ci).mul_(tj)  # sigmoid' = s (1 - s)
    torch.mul(tj, tj, out=cj)
    torch.addcmul(si, si, cj, value=-1, out=cj)  # si (1 - tanh^2)
    if keep is not None:
        ci.mul_(keep)
        cj.mul_(keep)
    torch.addcmul(sf, sf, sf, value=-1, out=cf).mul_(c_prev)
    torch.addcmul(so, so, so, value=-1, out=co).mul_(tanh_c)
    torch.mul(tanh_c, tanh_c, out=cc)
    torch.addcmul(so, so, cc, value=-1, out=cc)
    return coefs


class _LNTape:
    """One layer-norm LSTM over a sequence: its per-step record in ``(T, ...)`` buffers, the forward
    step that fills them, and the BPTT pieces that read them (per-step chain, batched parameter grads).

    The caller writes each step's gate pre-activations into ``raw[t]`` (how they are formed is the
    cell's business) and keeps the state buffers; the tape does the rest of magenta's step, with the C++
    kernels (:mod:`~sketchlab.models.sketch_rnn.step_kernels`) where they run, else the PyTorch ops below.
    """

    def __init__(self, raw: Tensor, ln_mean: Tensor, ln_rstd: Tensor, acts: Tensor, c_mean: Tensor,
                 c_rstd: Tensor, tanh_c: Tensor) -> None:
        self.raw, self.ln_mean, self.ln_rstd, self.acts = raw, ln_mean, ln_rstd, acts
        self.c_mean, self.c_rstd, self.tanh_c = c_mean, c_rstd, tanh_c
        self.n = raw.shape[-1]
        # unbound once: indexing a buffer per step costs more than the views
        self.raw_t, self.acts_t, self.tanh_c_t = raw.unbind(0), acts.unbind(0), tanh_c.unbind(0)
        self.ln_mean_t, self.ln_rstd_t = ln_mean.unbind(0), ln_rstd.unbind(0)
        self.c_mean_t, self.c_rstd_t = c_mean.unbind(0), c_rstd.unbind(0)
        self.kernels = kernels_for(raw)

    @classmethod
    def empty(cls, steps: int, batch: int, n: int, like: Tensor) -> _LNTape:
        new = like.new_empty
        return cls(new(steps, batch, 4, n), new(steps, batch, 4, 1), new(steps, batch, 4, 1),
                   new(steps, batch, 4, n), new(steps, batch, 1), new(steps, batch, 1), new(steps, batch, n))

    def tensors(self) -> list[Tensor]:
        """What to save for the backward (in the order of the constructor)."""
        return [self.raw, self.ln_mean, self.ln_rstd, self.acts, self.c_mean, self.c_rstd, self.tanh_c]

    def forward_step(self, t: int, c: Tensor, keep: Tensor | None, gamma4: Tensor, beta4: Tensor,
                     gamma_c: Tensor, beta_c: Tensor, c_out: Tensor, h_out: Tensor) -> None:
        """Step ``t`` from ``raw[t]`` and the memory ``c``: the new memory into ``c_out``, h into ``h_out``.

        ``beta4`` is the gates' shift with the forget bias already added to its ``f`` block.
        """
        if self.kernels is not None:
            self.kernels.ln_forward_step(self.raw_t[t], c, keep, gamma4, beta4, gamma_c, beta_c, self.ln_mean_t[t],
                                         self.ln_rstd_t[t], self.acts_t[t], self.c_mean_t[t], self.c_rstd_t[t],
                                         self.tanh_c_t[t], c_out, h_out, LN_EPS)
            return
        n, a = self.n, self.acts_t[t]
        xhat, mean, rstd = torch.native_layer_norm(self.raw_t[t], [n], None, None, LN_EPS)
        self.ln_mean_t[t].copy_(mean)
        self.ln_rstd_t[t].copy_(rstd)
        g = torch.addcmul(beta4, xhat, gamma4)
        torch.sigmoid(g, out=a)
        torch.tanh(g[:, 1], out=a[:, 1])  # the candidate's block
        si, tj, sf, so = a.unbind(1)
        cand = tj * keep if keep is not None else tj
        c = torch.addcmul(c * sf, si, cand, out=c_out)
        c_hat, mean, rstd = torch.native_layer_norm(c, [n], gamma_c, beta_c, LN_EPS)
        self.c_mean_t[t].copy_(mean)
        self.c_rstd_t[t].copy_(rstd)
        torch.mul(torch.tanh(c_hat, out=self.tanh_c_t[t]), so, out=h_out)

    def start_backward(self, cs: Tensor, keep: Tensor | None, gamma4: Tensor, gamma_c: Tensor) -> None:
        """Before the chain; ``cs`` are the memories ``(T + 1, B, n)``, initial first. The Python steps
        take the chain-independent factors of all steps here; the kernels form them row by row."""
        self.c_new = cs[1:]  # the memory before its layer norm is the stored state
        self.c_new_t = self.c_new.unbind(0)
        self.gamma4, self.gamma_c = gamma4, gamma_c
        self.d_raw = torch.empty_like(self.raw)  # w.r.t. the gate pre-activations
        self.d_raw_t = self.d_raw.unbind(0)
        if self.kernels is not None:
            self.c_prev_t = cs[:-1].unbind(0)
            self.keep_t = keep.unbind(0) if keep is not None else (None,) * len(self.raw_t)
            # the gains' and shifts' gradients, summed by the kernels step by step, in float64
            self.ln_sums = torch.zeros(10 * self.n, dtype=torch.float64)
            return
        self.coefs = _lstm_coefs(self.acts, self.tanh_c, cs[:-1], keep)
        self.coef_ijf_t = self.coefs[:, :, :3].unbind(0)
        self.coef_o_t, self.coef_c_t = self.coefs[:, :, 3].unbind(0), self.coefs[:, :, 4].unbind(0)
        self.sf_t = self.acts[:, :, 2].unbind(0)
        self.d_gates = torch.empty_like(self.acts)  # w.r.t. the gates after the layer norm (for its gain)
        self.d_chat = torch.empty_like(self.tanh_c)  # w.r.t. the memory's layer-norm output
        self.d_gates_t, self.d_chat_t = self.d_gates.unbind(0), self.d_chat.unbind(0)

    def backward_step(self, t: int, dh: Tensor, dc: Tensor) -> tuple[Tensor, Tensor]:
        """From the gradients w.r.t. step ``t``'s new h and c: ``(d raw[t] (B, 4, n), d c before step t)``."""
        if self.kernels is not None:
            dc = self.kernels.ln_backward_step(dh, dc, self.acts_t[t], self.tanh_c_t[t], self.c_prev_t[t],
                                               self.keep_t[t], self.gamma4, self.gamma_c, self.raw_t[t],
                                               self.ln_mean_t[t], self.ln_rstd_t[t], self.c_new_t[t],
                                               self.c_mean_t[t], self.c_rstd_t[t], self.d_raw_t[t], self.ln_sums)
            return self.d_raw_t[t], dc
        n, dg = self.n, self.d_gates_t[t]
        torch.mul(dh, self.coef_o_t[t], out=dg[:, 3])
        dch = torch.mul(dh, self.coef_c_t[t], out=self.d_chat_t[t])
        dc = dc + _ln_backward(dch * self.gamma_c, self.c_new_t[t], self.c_mean_t[t], self.c_rstd_t[t], n)
        torch.mul(self.coef_ijf_t[t], dc.unsqueeze(1), out=dg[:, :3])
        d_raw = self.d_raw_t[t]
        d_raw.copy_(_ln_backward(dg * self.gamma4, self.raw_t[t], self.ln_mean_t[t], self.ln_rstd_t[t], n))
        return d_raw, dc * self.sf_t[t]

    def ln_grads(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Gradients of the gates' gain and shift ``(4n,)`` and the memory's ``(n,)``, over all steps.

        After the chain only. The Python steps' version overwrites the factors of :meth:`start_backward`
        (scratch space here).
        """
        n = self.n
        if self.kernels is not None:
            sums = self.ln_sums.to(self.raw.dtype)
            return sums[:4 * n], sums[4 * n:8 * n], sums[8 * n:9 * n], sums[9 * n:]
        scratch = self.coefs
        xhat_d = torch.sub(self.raw, self.ln_mean, out=scratch[:, :, :4]).mul_(self.ln_rstd).mul_(self.d_gates)
        chat_d = torch.sub(self.c_new, self.c_mean, out=scratch[:, :, 4]).mul_(self.c_rstd).mul_(self.d_chat)
        return (xhat_d.sum((0, 1)).reshape(4 * n), self.d_gates.sum((0, 1)).reshape(4 * n),
                chat_d.sum((0, 1)), self.d_chat.sum((0, 1)))


class _FusedPlainLSTM(torch.autograd.Function):
    """``G`` plain LSTMs, each with its own weights, over sequences of the same lengths, as one loop.

    Group-major: ``xp`` ``(G, T, B, 4n)``, ``h0``/``c0`` ``(G, B, n)``, ``w_hh`` ``(G, n, 4n)``, ``keep``
    ``(G, T, B, n)`` or None. Outputs ``(hs, cs, h_last, c_last)``: the states after every step,
    ``(G, T, B, n)`` each, and each sequence's final state ``(G, B, n)``. One group is one cell; the
    encoder runs its two directions as two groups, which halves the number of small ops per step (at
    Sketch-RNN's small sizes their fixed cost is a large part of a step).

    ``live``: the number of sequences still running at each step, for a batch sorted by decreasing
    length (None: all of them, all the way). Step ``t`` then computes only the first ``live[t]`` rows;
    the states of the others there are never read (a row's outputs are read up to its last step only).
    """

    @staticmethod
    def forward(ctx, xp: Tensor, h0: Tensor, c0: Tensor, w_hh: Tensor, keep: Tensor | None, forget_bias: float,
                live: list[int] | None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        groups, steps, batch, four_n = xp.shape
        n = four_n // 4
        live = [batch] * steps if live is None else live
        new = xp.new_empty
        hs, cs = new(groups, steps + 1, batch, n), new(groups, steps + 1, batch, n)  # the initial state first
        hs[:, 0], cs[:, 0] = h0, c0
        acts = new(groups, steps, batch, 4, n)  # sigmoid(i), tanh(j), sigmoid(f + forget_bias), sigmoid(o)
        tanh_c = new(groups, steps, batch, n)
        # the forget bias folded into the input projection
        xpf = xp.view(groups, steps, batch, 4, n).add(_forget_shift(forget_bias, xp)).view(groups, steps, batch, four_n)
        w_step = _step_weight(w_hh)
        kernels = kernels_for(xp)
        hs_t, cs_t, acts_t, tanh_c_t, xp_t = (b.unbind(1) for b in (hs, cs, acts, tanh_c, xpf))
        keep_t = keep.unbind(1) if keep is not None else (None,) * steps
        for t in range(steps):
            b = live[t]
            views = (acts_t[t], xp_t[t], hs_t[t], cs_t[t], keep_t[t], cs_t[t + 1], tanh_c_t[t], hs_t[t + 1])
            if b < batch:
                hs_t[t + 1][:, b:].zero_()  # the backward's weight gradient reads every state: finite zeros
                if b == 0:
                    hs[:, t + 2:].zero_()
                    break
                views = _rows(b, *views)
            a, xpt, h, c, keept, c_out, tc_out, h_out = views
            g = torch.baddbmm(xpt, h, w_step)
            if kernels is not None:
                kernels.lstm_forward_step(g, c, keept, a, c_out, tc_out, h_out)
                continue
            g = g.view(groups, b, 4, n)
            torch.sigmoid(g, out=a)
            torch.tanh(g[:, :, 1], out=a[:, :, 1])
            si, tj, sf, so = a.unbind(2)
            cand = tj * keept if keept is not None else tj
            c = torch.addcmul(c * sf, si, cand, out=c_out)
            torch.mul(torch.tanh(c, out=tc_out), so, out=h_out)
        # rows ending at step t: [live[t + 1], live[t]) of the sorted batch
        ends = {t: (nxt, b) for t, (b, nxt) in enumerate(zip(live, [*live[1:], 0])) if b > nxt}
        last = torch.empty(batch, dtype=torch.long, device=xp.device)
        for t, (first, stop) in ends.items():
            last[first:stop] = t + 1
        rows = torch.arange(batch, device=xp.device)
        ctx.live, ctx.ends = live, ends
        ctx.set_materialize_grads(False)  # unused outputs get no zero gradients
        ctx.save_for_backward(w_hh, hs, cs, keep, acts, tanh_c)
        return hs[:, 1:], cs[:, 1:], hs[:, last, rows], cs[:, last, rows]

    @staticmethod
    @once_differentiable
    def backward(ctx, d_hs: Tensor | None, d_cs: Tensor | None, d_h_last: Tensor | None,
                 d_c_last: Tensor | None) -> tuple:
        w_hh, hs, cs, keep, acts, tanh_c = ctx.saved_tensors
        live, ends = ctx.live, ctx.ends
        groups, steps, batch, _, n = acts.shape
        w_t = _back_weight(w_hh)
        kernels = kernels_for(acts)
        d_raw = acts.new_empty(acts.shape)  # w.r.t. xp[t] + h @ W_hh
        d_raw_t = d_raw.unbind(1)
        d_hs_t = d_hs.unbind(1) if d_hs is not None else (None,) * steps
        d_cs_t = d_cs.unbind(1) if d_cs is not None else (None,) * steps
        if kernels is not None:  # they form the chain-independent factors row by row
            keep_t = keep.unbind(1) if keep is not None else (None,) * steps
            record_t = tuple(zip(acts.unbind(1), tanh_c.unbind(1), cs[:, :-1].unbind(1), keep_t))
        else:
            coefs = _lstm_coefs(acts, tanh_c, cs[:, :-1], keep)
            record_t = tuple(zip(coefs[:, :, :, 3].unbind(1), coefs[:, :, :, 4].unbind(1),
                                 coefs[:, :, :, :3].unbind(1), acts[:, :, :, 2].unbind(1)))
        dh, dc = hs.new_zeros(groups, batch, n), hs.new_zeros(groups, batch, n)
        for t in range(steps - 1, -1, -1):
            b = live[t]
            views = (dh, dc, d_raw_t[t], d_hs_t[t], d_cs_t[t], *record_t[t])
            if b < batch:
                d_raw_t[t][:, b:].zero_()  # no gradient where no row ran (read by the batched products below)
                if b == 0:
                    continue
                # going backwards, the rows past b have not started: their dh and dc are still zero
                views = _rows(b, *views)
            dhb, dcb, dg, dht, dct, *record = views
            if t in ends:  # the final states of the rows that end here (dh and dc are this loop's own buffers)
                first, stop = ends[t]
                if d_h_last is not None:
                    dhb[:, first:stop] += d_h_last[:, first:stop]
                if d_c_last is not None:
                    dcb[:, first:stop] += d_c_last[:, first:stop]
            if kernels is not None:  # the memory's gradient in place, into dc's own rows
                kernels.lstm_backward_step(dhb, dcb, dht, dct, *record, dg.view(groups, b, 4 * n), dcb)
            else:
                co, cc, cijf, sf = record
                if dht is not None:
                    dhb = dhb + dht
                if dct is not None:
                    dcb = dcb + dct
                torch.mul(dhb, co, out=dg[:, :, 3])
                dcb = torch.addcmul(dcb, dhb, cc)
                torch.mul(cijf, dcb.unsqueeze(2), out=dg[:, :, :3])
                if b == batch:
                    dc = dcb * sf
                else:
                    torch.mul(dcb, sf, out=dc[:, :b])
            if b == batch:
                dh = torch.bmm(dg.view(groups, b, 4 * n), w_t)
            else:
                dh[:, :b] = torch.bmm(dg.view(groups, b, 4 * n), w_t)
        rows = steps * batch
        d_w = torch.bmm(hs[:, :-1].reshape(groups, rows, n).transpose(1, 2), d_raw.view(groups, rows, 4 * n))
        return d_raw.view(groups, steps, batch, 4 * n), dh, dc, d_w, None, None, None


class _FusedLayerNormLSTM(torch.autograd.Function):
    """magenta's LayerNormLSTMCell over a sequence. Outputs ``(hs, cs)``: the states after every step,
    ``(T, B, hidden)`` each."""

    @staticmethod
    def forward(ctx, xp: Tensor, h0: Tensor, c0: Tensor, w_hh: Tensor, keep: Tensor | None, forget_bias: float,
                ln_all_gamma: Tensor, ln_all_beta: Tensor, ln_c_gamma: Tensor, ln_c_beta: Tensor) -> tuple[Tensor, Tensor]:
        steps, batch, four_n = xp.shape
        n = four_n // 4
        new = xp.new_empty
        hs, cs = new(steps + 1, batch, n), new(steps + 1, batch, n)  # states, the initial one first
        hs[0], cs[0] = h0, c0
        hs_t, cs_t = hs.unbind(0), cs.unbind(0)
        keep_t = keep.unbind(0) if keep is not None else (None,) * steps
        w_step = _step_weight(w_hh)
        tape = _LNTape.empty(steps, batch, n, xp)
        gamma4 = ln_all_gamma.view(4, n)
        beta4 = ln_all_beta.view(4, n) + _forget_shift(forget_bias, xp)  # the forget bias folded into the shift
        xp_t = xp.unbind(0)
        h = h0
        for t in range(steps):
            torch.addmm(xp_t[t], h, w_step, out=tape.raw_t[t].view(batch, four_n))
            tape.forward_step(t, cs_t[t], keep_t[t], gamma4, beta4, ln_c_gamma, ln_c_beta, cs_t[t + 1], hs_t[t + 1])
            h = hs_t[t + 1]
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(w_hh, hs, cs, keep, ln_all_gamma, ln_c_gamma, *tape.tensors())
        return hs[1:], cs[1:]

    @staticmethod
    @once_differentiable
    def backward(ctx, d_hs: Tensor | None, d_cs: Tensor | None) -> tuple:
        w_hh, hs, cs, keep, gamma, gamma_c, *tensors = ctx.saved_tensors
        steps, batch, n = cs.shape[0] - 1, cs.shape[1], cs.shape[2]
        w_t = _back_weight(w_hh)
        dh = hs.new_zeros(batch, n)
        dc = hs.new_zeros(batch, n)
        d_hs_t = d_hs.unbind(0) if d_hs is not None else None
        d_cs_t = d_cs.unbind(0) if d_cs is not None else None
        tape = _LNTape(*tensors)
        tape.start_backward(cs, keep, gamma.view(4, n), gamma_c)
        for t in range(steps - 1, -1, -1):
            if d_hs_t is not None:
                dh = dh + d_hs_t[t]
            if d_cs_t is not None:
                dc = dc + d_cs_t[t]
            d_raw_t, dc = tape.backward_step(t, dh, dc)
            dh = d_raw_t.view(batch, 4 * n) @ w_t
        d_raw = tape.d_raw
        d_w = hs[:-1].reshape(steps * batch, n).t() @ d_raw.view(steps * batch, 4 * n)
        return (d_raw.view(steps, batch, 4 * n), dh, dc, d_w, None, None, *tape.ln_grads())


class _FusedHyperLSTM(torch.autograd.Function):
    """Outputs ``(hs, cs, hyper_hs, hyper_cs)``: the states after every step, ``(T, B, size)`` each.

    Layouts: the main and hyper ``h`` side by side in one ``(T + 1, B, n + m)`` buffer, so that one
    product with ``[hyper W_xh's h-rows; hyper W_hh]`` feeds the small network (and one with its
    transpose goes back); the embeddings ``zw`` (8 blocks) and ``zb`` (4) as one ``(B, 12 emb)``
    product of ``[zw_w, zb_w]``; ``alpha`` ``(8, B, n)`` and ``beta`` ``(4, B, n)`` block-major, one
    ``bmm`` each (only alpha is kept for the backward, which goes back through both with one ``bmm``
    of ``[alpha_w; beta_w]``).
    """

    @staticmethod
    def forward(ctx, xp: Tensor, h0: Tensor, c0: Tensor, hyper_h0: Tensor, hyper_c0: Tensor, keep: Tensor | None,
                forget_bias: float, hyper_forget_bias: float, w_hh: Tensor, bias: Tensor,
                ln_all_gamma: Tensor, ln_all_beta: Tensor, ln_c_gamma: Tensor, ln_c_beta: Tensor,
                hyper_w_h: Tensor, hyper_w_hh: Tensor, hyper_ln_all_gamma: Tensor, hyper_ln_all_beta: Tensor,
                hyper_ln_c_gamma: Tensor, hyper_ln_c_beta: Tensor,
                zw_w: Tensor, zw_b: Tensor, zb_w: Tensor, alpha_w: Tensor, beta_w: Tensor) -> tuple[Tensor, ...]:
        steps, batch, _ = xp.shape
        n, m, emb = h0.shape[-1], hyper_h0.shape[-1], alpha_w.shape[1]
        new = xp.new_empty
        hs = new(steps + 1, batch, n + m)  # [h, hyper_h], the initial state first
        hs[0, :, :n], hs[0, :, n:] = h0, hyper_h0
        cs, hyper_cs = new(steps + 1, batch, n), new(steps + 1, batch, m)
        cs[0], hyper_cs[0] = c0, hyper_c0
        w_cat = torch.cat([hyper_w_h, hyper_w_hh])  # (n + m, 4m)
        w_cat_step, w_hh_step = _step_weight(w_cat), _step_weight(w_hh)
        w_z = torch.cat([zw_w, zb_w], dim=1)  # (m, 12 emb)
        b_z = torch.cat([zw_b, zw_b.new_zeros(4 * emb)])
        z = new(steps, batch, 12 * emb)
        alpha = new(steps, 8, batch, n)  # x blocks, h blocks; block-major for the batched product
        beta = new(4, batch, n)  # one step's (not needed by the backward)
        hh = new(steps, batch, 4 * n)  # h @ W_hh
        main, hyper = _LNTape.empty(steps, batch, n, xp), _LNTape.empty(steps, batch, m, xp)
        gamma4, beta4 = ln_all_gamma.view(4, n), ln_all_beta.view(4, n) + _forget_shift(forget_bias, xp)
        h_gamma4 = hyper_ln_all_gamma.view(4, m)
        h_beta4 = hyper_ln_all_beta.view(4, m) + _forget_shift(hyper_forget_bias, xp)
        bias4 = bias.view(4, n)
        xh_t, hyper_xp_t = xp[:, :, :4 * n].unbind(0), xp[:, :, 4 * n:].unbind(0)
        hs_t, cs_t, hyper_cs_t = hs.unbind(0), cs.unbind(0), hyper_cs.unbind(0)
        z_t, alpha_t, hh_t = z.unbind(0), alpha.unbind(0), hh.unbind(0)
        keep_t = keep.unbind(0) if keep is not None else (None,) * steps
        for t in range(steps):
            s, s_new = hs_t[t], hs_t[t + 1]
            # the small network reads [x, h]; its x-rows are in xp
            torch.addmm(hyper_xp_t[t], s, w_cat_step, out=hyper.raw_t[t].view(batch, 4 * m))
            hyper.forward_step(t, hyper_cs_t[t], None, h_gamma4, h_beta4, hyper_ln_c_gamma, hyper_ln_c_beta,
                               hyper_cs_t[t + 1], s_new[:, n:])
            zk = torch.addmm(b_z, s_new[:, n:], w_z, out=z_t[t]).view(batch, 12, emb).transpose(0, 1)
            a = torch.bmm(zk[:8], alpha_w, out=alpha_t[t]).transpose(0, 1)
            torch.bmm(zk[8:], beta_w, out=beta)
            hht = torch.mm(s[:, :n], w_hh_step, out=hh_t[t])
            if main.kernels is not None:
                main.kernels.hyper_gates_forward(alpha_t[t], beta, bias4, xh_t[t], hht, main.raw_t[t])
            else:
                g = torch.addcmul(beta.transpose(0, 1) + bias4, a[:, :4], xh_t[t].view(batch, 4, n))
                torch.addcmul(g, a[:, 4:], hht.view(batch, 4, n), out=main.raw_t[t])
            main.forward_step(t, cs_t[t], keep_t[t], gamma4, beta4, ln_c_gamma, ln_c_beta, cs_t[t + 1], s_new[:, :n])
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(xp, keep, w_hh, w_cat, w_z, alpha_w, beta_w, hs, cs, hyper_cs, z, alpha, hh,
                              ln_all_gamma, ln_c_gamma, hyper_ln_all_gamma, hyper_ln_c_gamma,
                              *main.tensors(), *hyper.tensors())
        return hs[1:, :, :n], cs[1:], hs[1:, :, n:], hyper_cs[1:]

    @staticmethod
    @once_differentiable
    def backward(ctx, d_hs: Tensor | None, d_cs: Tensor | None, d_hyper_hs: Tensor | None,
                 d_hyper_cs: Tensor | None) -> tuple:
        (xp, keep, w_hh, w_cat, w_z, alpha_w, beta_w, hs, cs, hyper_cs, z, alpha, hh, gamma, gamma_c, h_gamma,
         h_gamma_c, *tapes) = ctx.saved_tensors
        steps, batch, width = xp.shape
        n, m, emb = cs.shape[-1], hyper_cs.shape[-1], alpha_w.shape[1]
        w_ab = torch.cat([alpha_w, beta_w])  # (12, emb, n)
        main, hyper = _LNTape(*tapes[:7]), _LNTape(*tapes[7:])
        main.start_backward(cs, keep, gamma.view(4, n), gamma_c)
        hyper.start_backward(hyper_cs, None, h_gamma.view(4, m), h_gamma_c)
        # block-major views (T, 4, B, n) of the terms alpha multiplies
        xh_k = xp[:, :, :4 * n].view(steps, batch, 4, n).transpose(1, 2)
        hh_k = hh.view(steps, batch, 4, n).transpose(1, 2)
        d_z = xp.new_empty(steps, batch, 12 * emb)  # w.r.t. [zw, zb]
        d_hh = xp.new_empty(steps, batch, 4, n)  # w.r.t. h @ W_hh
        d_ab = xp.new_empty(12, batch, n)  # w.r.t. alpha, beta of one step
        dz_k = xp.new_empty(12, batch, emb)
        w_ab_t, w_z_t, w_cat_t, w_hh_t = (_back_weight(w) for w in (w_ab, w_z, w_cat, w_hh))
        xh_k_t, hh_k_t, alpha_t = xh_k.unbind(0), hh_k.unbind(0), alpha.unbind(0)
        xh_t, hh_t = xp[:, :, :4 * n].unbind(0), hh.unbind(0)  # (B, 4n) rows, for the kernels
        d_z_t, d_hh_t = d_z.unbind(0), d_hh.unbind(0)
        grads_in = [g.unbind(0) if g is not None else None for g in (d_hs, d_cs, d_hyper_hs, d_hyper_cs)]
        dh, dc = cs.new_zeros(batch, n), cs.new_zeros(batch, n)
        dhh, dhc = cs.new_zeros(batch, m), cs.new_zeros(batch, m)
        for t in range(steps - 1, -1, -1):
            d_out = [g[t] if g is not None else None for g in grads_in]
            dh = dh + d_out[0] if d_out[0] is not None else dh
            dc = dc + d_out[1] if d_out[1] is not None else dc
            dhh = dhh + d_out[2] if d_out[2] is not None else dhh
            dhc = dhc + d_out[3] if d_out[3] is not None else dhc
            d_raw, dc = main.backward_step(t, dh, dc)
            if main.kernels is not None:
                main.kernels.hyper_gates_backward(d_raw, xh_t[t], hh_t[t], alpha_t[t], d_ab, d_hh_t[t])
            else:
                dr = d_raw.transpose(0, 1)  # (4, B, n)
                torch.mul(dr, xh_k_t[t], out=d_ab[:4])
                torch.mul(dr, hh_k_t[t], out=d_ab[4:8])
                d_ab[8:].copy_(dr)
                torch.mul(d_raw, alpha_t[t][4:].transpose(0, 1), out=d_hh_t[t])
            torch.bmm(d_ab, w_ab_t, out=dz_k)
            d_z_t[t].view(batch, 12, emb).copy_(dz_k.transpose(0, 1))
            dhh = torch.addmm(dhh, d_z_t[t], w_z_t)
            d_hyper_raw, dhc = hyper.backward_step(t, dhh, dhc)
            d_s = d_hyper_raw.view(batch, 4 * m) @ w_cat_t  # w.r.t. [h, hyper_h] before the step
            dh = torch.addmm(d_s[:, :n], d_hh_t[t].view(batch, 4 * n), w_hh_t)
            dhh = d_s[:, n:]
        rows = steps * batch
        d_graw = main.d_raw  # w.r.t. the main gates before their layer norm
        d_xp = xp.new_empty(steps, batch, width)
        torch.mul(d_graw, alpha[:, :4].transpose(1, 2), out=d_xp[:, :, :4 * n].view(steps, batch, 4, n))
        d_xp[:, :, 4 * n:] = hyper.d_raw.view(steps, batch, 4 * m)
        d_w_hh = hs[:-1, :, :n].reshape(rows, n).t() @ d_hh.view(rows, 4 * n)
        d_bias = d_graw.sum((0, 1)).reshape(4 * n)
        # alpha_w, beta_w: per group of 4 blocks, [zw, zb]^T (4, emb, TB) @ d(alpha | beta) (4, TB, n)
        z_k = z.view(rows, 12, emb).permute(1, 2, 0)
        d_w_ab = xp.new_empty(12, emb, n)
        main_ln = main.ln_grads()
        # scratch: the Python steps' gate gradients are free after ln_grads
        prod = torch.mul(d_graw, xh_k.transpose(1, 2), out=main.d_gates if main.kernels is None else None)
        torch.bmm(z_k[:4], prod.view(rows, 4, n).transpose(0, 1), out=d_w_ab[:4])
        torch.mul(d_graw, hh.view(steps, batch, 4, n), out=prod)
        torch.bmm(z_k[4:8], prod.view(rows, 4, n).transpose(0, 1), out=d_w_ab[4:8])
        torch.bmm(z_k[8:], d_graw.view(rows, 4, n).transpose(0, 1), out=d_w_ab[8:])
        d_w_z = hs[1:, :, n:].reshape(rows, m).t() @ d_z.view(rows, 12 * emb)
        d_zw_b = d_z.view(rows, 12 * emb)[:, :8 * emb].sum(0)
        d_w_cat = hs[:-1].reshape(rows, n + m).t() @ hyper.d_raw.view(rows, 4 * m)
        return (d_xp, dh, dc, dhh, dhc, None, None, None, d_w_hh, d_bias, *main_ln,
                d_w_cat[:n], d_w_cat[n:], *hyper.ln_grads(),
                d_w_z[:, :8 * emb], d_zw_b, d_w_z[:, 8 * emb:], d_w_ab[:8], d_w_ab[8:])


def _fused_states(cell: MagentaCell, xp: Tensor, keep: Tensor | None, state: State) -> tuple[Tensor, ...]:
    """The states after every step, ``(T, B, size)`` each, in the order of the cell's state tuple
    (layer-norm and hyper cells; the plain LSTM runs through :func:`fused_run_many`)."""
    if isinstance(cell, HyperLSTMCell):
        hc = cell.hyper_cell
        return _FusedHyperLSTM.apply(
            xp, *state, keep, float(cell.forget_bias), float(hc.forget_bias), cell.w_hh, cell.bias,
            cell.ln_all_gamma, cell.ln_all_beta, cell.ln_c_gamma, cell.ln_c_beta,
            hc.w_xh[cell.input_size:], hc.w_hh, hc.ln_all_gamma, hc.ln_all_beta, hc.ln_c_gamma, hc.ln_c_beta,
            cell.zw_w, cell.zw_b, cell.zb_w, cell.alpha_w, cell.beta_w)
    assert isinstance(cell, LayerNormLSTMCell)
    return _FusedLayerNormLSTM.apply(xp, *state, cell.w_hh, keep, float(cell.forget_bias), cell.ln_all_gamma,
                                     cell.ln_all_beta, cell.ln_c_gamma, cell.ln_c_beta)


def _check_lengths(lengths: Tensor, steps: int) -> tuple[Tensor, Tensor]:
    """``(last, index)``: each sequence's last step ``(B,)`` and, per step, the step whose state it shows ``(T, B)``."""
    if int(lengths.min()) < 1:
        raise ValueError("every sequence needs at least one step (found a length < 1)")
    last = (lengths - 1).clamp(max=steps - 1)
    return last, torch.minimum(torch.arange(steps, device=lengths.device).unsqueeze(1), last)


def _stack(tensors: list[Tensor]) -> Tensor:
    """A leading group axis: a view for one tensor, a stacked copy for more."""
    return tensors[0].unsqueeze(0) if len(tensors) == 1 else torch.stack(tensors)


def supports_fused_many(cells: list[MagentaCell]) -> bool:
    """Whether :func:`fused_run_many` can run ``cells`` together: plain LSTMCells of one size and forget bias."""
    first = cells[0]
    return all(type(c) is LSTMCell and (c.input_size, c.hidden_size, c.forget_bias) ==
               (first.input_size, first.hidden_size, first.forget_bias) for c in cells)


def fused_run_many(cells: list[LSTMCell], xs: list[Tensor], states: list[State], lengths: Tensor | None = None,
                   contexts: list[Tensor | None] | None = None) -> list[tuple[Tensor, State]]:
    """:func:`fused_run` of several plain LSTMCells at once, cell ``g`` over ``xs[g]`` (T, B, input) from
    ``states[g]``, all with the same ``lengths`` (the encoder's two directions): one loop, one Function.

    Each cell draws its recurrent-dropout masks in turn, as separate runs would, so the random stream
    stays in step with the eager path. With ``lengths`` the padding is skipped, as
    ``pack_padded_sequence`` does: the batch is sorted by decreasing length and step ``t`` runs only the
    sequences still going.
    """
    if not supports_fused_many(cells):
        raise TypeError("fused_run_many runs plain LSTMCells of one size and forget bias")
    steps, batch = xs[0].shape[0], xs[0].shape[1]
    contexts = contexts or [None] * len(cells)
    order = live = None
    if lengths is not None:
        lengths = lengths.to(xs[0].device)
        last, index = _check_lengths(lengths, steps)
        order = torch.argsort(lengths, descending=True, stable=True)
        pos = torch.empty_like(order)  # row b of a result is sorted row pos[b]
        pos[order] = torch.arange(batch, device=lengths.device)
        live = (lengths.unsqueeze(0) > torch.arange(steps, device=lengths.device).unsqueeze(1)).sum(1).tolist()
    xps, keeps = [], []
    for cell, x, context in zip(cells, xs, contexts):
        if order is not None:
            x, context = x[:, order], None if context is None else context[order]
        xps.append(cell.project_input(x, context))
        keep = cell.dropout_masks(steps, batch, xps[-1])  # drawn in the batch's own order
        keeps.append(keep if keep is None or order is None else keep[:, order])
    if len({k is None for k in keeps}) > 1:
        raise ValueError("fused_run_many needs every cell in the same mode (recurrent dropout on or off)")
    h0 = [s[0] if order is None else s[0][order] for s in states]
    c0 = [s[1] if order is None else s[1][order] for s in states]
    hs, cs, h_last, c_last = _FusedPlainLSTM.apply(
        _stack(xps).contiguous(), _stack(h0), _stack(c0), _stack([c.w_hh for c in cells]),
        None if keeps[0] is None else _stack(keeps), float(cells[0].forget_bias), live)
    if lengths is None:
        return [(hs[g], (h_last[g], c_last[g])) for g in range(len(cells))]
    return [(hs[g][index, pos], (h_last[g][pos], c_last[g][pos])) for g in range(len(cells))]


def fused_run(cell: MagentaCell, x: Tensor, state: State, lengths: Tensor | None = None,
              context: Tensor | None = None) -> tuple[Tensor, State]:
    """:func:`~sketchlab.models.sketch_rnn.recurrence.run_loop` of one of magenta's cells as one Function.

    Same arguments and results as the loop (outputs ``(T, B, hidden)`` and the final state); draws the
    recurrent-dropout masks identically, so the random stream stays in step with the eager path.
    """
    if not supports_fused(cell):
        raise TypeError(f"fused_run runs LSTMCell, LayerNormLSTMCell and HyperLSTMCell, not {type(cell).__name__}")
    if type(cell) is LSTMCell:
        return fused_run_many([cell], [x], [state], lengths, [context])[0]
    steps, batch = x.shape[0], x.shape[1]
    xp = cell.project_input(x, context)
    keep = cell.dropout_masks(steps, batch, xp)
    states = _fused_states(cell, xp.contiguous(), keep, state)
    if lengths is None:
        return states[0], tuple(s[-1] for s in states)
    # dynamic_rnn's frozen states: outputs repeat the last live state, the final state is the one at
    # step lengths - 1. Steps past a length change nothing that is read, so they need no masking inside.
    last, index = _check_lengths(lengths.to(x.device), steps)
    cols = torch.arange(batch, device=x.device)
    return states[0][index, cols], tuple(s[last, cols] for s in states)
