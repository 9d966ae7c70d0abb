"""Sketch-RNN's recurrent cells, as magenta's ``sketch_rnn/rnn.py`` defines them.

Weights are stored in magenta's layout, ``(in, out)`` matrices applied as ``x @ W`` with gate blocks
ordered ``i, j, f, o`` (input gate, candidate, forget gate, output gate), so a magenta checkpoint maps
onto them one to one. Each cell splits magenta's ``__call__`` in two:

- ``project_input(x, context)``: the input's contribution to the gates, computed for all time steps in
  one matrix product (it does not depend on the recurrent state). A ``context`` is a per-sequence input
  that every step shares (Sketch-RNN's latent ``z``, appended to each step's input): its product is
  taken once per sequence rather than once per step (:func:`project`);
- ``step(xp, state, keep)``: one recurrent step from that projection.

``keep`` is the recurrent-dropout mask of the step (Semeniuta et al. 2016, "without memory loss": it
multiplies the candidate ``tanh(j)`` only), already divided by the keep probability as
``tf.nn.dropout`` does, or None. Masks are drawn for the whole sequence up front by
:meth:`MagentaCell.dropout_masks`, so every execution path consumes the random stream identically.

States are tuples ``(h, c, ...)``; :meth:`MagentaCell.state_from_flat` reads magenta's flat state
vector, whose order differs between cells (``[c, h]`` for LSTMCell, ``[h, c]`` for the others).
"""

from __future__ import annotations

import abc
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

State = tuple[Tensor, ...]

#: Layer-norm epsilon of magenta's ``layer_norm`` / ``layer_norm_all``.
LN_EPS = 1e-3
CELL_KINDS = ("lstm", "layer_norm", "hyper")


# -- initialisers (magenta's rnn.py and TensorFlow 1 defaults) ------------------------------------

def orthogonal(rows: int, cols: int, generator: torch.Generator | None = None) -> Tensor:
    """Magenta's ``orthogonal``: the orthogonal factor of the SVD of a standard normal matrix."""
    a = torch.randn(rows, cols, generator=generator, dtype=torch.float64)
    u, _, vh = torch.linalg.svd(a, full_matrices=False)
    q = u if u.shape == (rows, cols) else vh
    return q.to(torch.float32)


@torch.no_grad()
def lstm_ortho_(weight: Tensor) -> Tensor:
    """Magenta's ``lstm_ortho_initializer``: an independent orthogonal matrix per gate block."""
    rows, cols = weight.shape
    size_h = cols // 4
    for k in range(4):
        weight[:, k * size_h:(k + 1) * size_h] = orthogonal(rows, size_h)
    return weight


@torch.no_grad()
def glorot_uniform_(weight: Tensor) -> Tensor:
    """TensorFlow 1's default ``get_variable`` initialiser; a 1-D shape counts as fan_in = fan_out = size."""
    fan_in, fan_out = (weight.shape[0], weight.shape[-1]) if weight.dim() > 1 else (weight.numel(),) * 2
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    return weight.uniform_(-limit, limit)


# -- layer norm -----------------------------------------------------------------------------------

def layer_norm_all(h: Tensor, gamma: Tensor, beta: Tensor, base: int = 4) -> Tensor:
    """Magenta's ``layer_norm_all``: normalise each of ``base`` gate blocks separately, then one affine."""
    shape = h.shape
    normed = F.layer_norm(h.reshape(*shape[:-1], base, shape[-1] // base), (shape[-1] // base,), eps=LN_EPS)
    return normed.reshape(shape) * gamma + beta


def layer_norm(x: Tensor, gamma: Tensor, beta: Tensor) -> Tensor:
    """Magenta's ``layer_norm`` over the last axis (epsilon 1e-3)."""
    return F.layer_norm(x, (x.shape[-1],), gamma, beta, eps=LN_EPS)


# -- input projection -----------------------------------------------------------------------------

def project(x: Tensor, weight: Tensor, context: Tensor | None = None, bias: Tensor | None = None) -> Tensor:
    """``[x, context] @ weight (+ bias)`` where ``context`` (B, c) is the same at every step of ``x`` (..., B, k).

    The same function as concatenating the context to every step and projecting, but the context's
    rows of ``weight`` are applied once per sequence: for Sketch-RNN's decoder (5 stroke features and a
    128-wide ``z``) that is ~1/T of the work in the forward and in both gradients. Sums are grouped
    differently from the concatenated product, so float32 results agree to rounding.
    """
    k = x.shape[-1]
    shared = bias
    if context is not None:
        if k + context.shape[-1] != weight.shape[0]:
            raise ValueError(f"input ({k}) and context ({context.shape[-1]}) widths must add up to the cell's "
                             f"input size {weight.shape[0]}")
        shared = context @ weight[k:] if bias is None else torch.addmm(bias, context, weight[k:])
        weight = weight[:k]
    if x.dim() != 3:
        out = x @ weight
        return out if shared is None else out + shared
    # a whole sequence (T, B, k): one batched product over the steps. For the few stroke features
    # (k = 5) a CPU runs it about twice as fast as one (T * B, k) x (k, out) product plus the shift
    steps, width = x.shape[0], weight.shape[1]
    w = weight.unsqueeze(0).expand(steps, k, width)
    if shared is None:
        return torch.bmm(x, w)
    return torch.baddbmm(shared.view(-1, width).unsqueeze(0), x, w)


# -- cells ----------------------------------------------------------------------------------------

class MagentaCell(nn.Module, abc.ABC):
    """Common surface of the three cells (see the module docstring)."""

    def __init__(self, input_size: int, hidden_size: int, forget_bias: float = 1.0,
                 recurrent_dropout: float = 0.0) -> None:
        super().__init__()
        if input_size < 1 or hidden_size < 1:
            raise ValueError(f"input_size and hidden_size must be positive, got {input_size}, {hidden_size}")
        if not 0.0 <= recurrent_dropout < 1.0:
            raise ValueError(f"recurrent_dropout is a drop probability in [0, 1), got {recurrent_dropout}")
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.forget_bias = forget_bias
        self.recurrent_dropout = recurrent_dropout

    @property
    def state_size(self) -> int:
        """Width of magenta's flat state vector (what the conditional initial state is projected to)."""
        return 2 * self.hidden_size

    def state_from_flat(self, flat: Tensor) -> State:
        """Magenta's flat ``[h, c]`` state split into ``(h, c)`` (overridden where the order differs)."""
        h, c = flat.split(self.hidden_size, dim=-1)
        return h, c

    def zero_state(self, batch: int, like: Tensor) -> State:
        return self.state_from_flat(like.new_zeros(batch, self.state_size))

    @staticmethod
    def output(state: State) -> Tensor:
        """The cell's output ``h``, first in every state tuple."""
        return state[0]

    def dropout_masks(self, steps: int, batch: int, like: Tensor) -> Tensor | None:
        """``(steps, batch, hidden)`` recurrent-dropout masks scaled by 1/keep; None when not training."""
        if not (self.training and self.recurrent_dropout > 0):
            return None
        keep = 1.0 - self.recurrent_dropout
        shape = (steps, batch, self.hidden_size)
        # uniform < keep: on a CPU the same draws and the same masks as torch.bernoulli(full(keep)) (the
        # masks of earlier versions; tests/test_sketch_rnn_cells.py checks it), in half the time
        return torch.rand(shape, device=like.device, dtype=like.dtype).lt_(keep).div_(keep)

    def _lstm_update(self, gates: Tensor, c: Tensor, keep: Tensor | None) -> tuple[Tensor, Tensor]:
        """Magenta's memory update from ``i, j, f, o`` pre-activations; returns ``(new_c, sigmoid(o))``."""
        i, j, f, o = gates.chunk(4, dim=-1)
        g = torch.tanh(j)
        if keep is not None:
            g = g * keep
        new_c = c * torch.sigmoid(f + self.forget_bias) + torch.sigmoid(i) * g
        return new_c, torch.sigmoid(o)

    @abc.abstractmethod
    def project_input(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """Input contribution to the gates for any leading shape ``(..., input_size)``; with a per-sequence
        ``context`` (B, c), of ``[x, context]`` where ``x`` is ``(..., B, input_size - c)`` (:func:`project`)."""

    @abc.abstractmethod
    def step(self, xp: Tensor, state: State, keep: Tensor | None = None) -> State:
        """One recurrent step from the projected input ``xp`` (a row of :meth:`project_input`)."""


class LSTMCell(MagentaCell):
    """Magenta's ``LSTMCell``: orthogonal recurrent init, forget bias 1, recurrent dropout on the candidate."""

    def __init__(self, input_size: int, hidden_size: int, forget_bias: float = 1.0,
                 recurrent_dropout: float = 0.0) -> None:
        super().__init__(input_size, hidden_size, forget_bias, recurrent_dropout)
        self.w_xh = nn.Parameter(glorot_uniform_(torch.empty(input_size, 4 * hidden_size)))
        self.w_hh = nn.Parameter(lstm_ortho_(torch.empty(hidden_size, 4 * hidden_size)))
        self.bias = nn.Parameter(torch.zeros(4 * hidden_size))

    def state_from_flat(self, flat: Tensor) -> State:
        c, h = flat.split(self.hidden_size, dim=-1)  # magenta's LSTMCell keeps [c, h]
        return h, c

    def project_input(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        return project(x, self.w_xh, context, self.bias)

    def step(self, xp: Tensor, state: State, keep: Tensor | None = None) -> State:
        h, c = state
        new_c, out_gate = self._lstm_update(xp + h @ self.w_hh, c, keep)
        return torch.tanh(new_c) * out_gate, new_c


class LayerNormLSTMCell(MagentaCell):
    """Magenta's ``LayerNormLSTMCell``: no gate bias, layer norm per gate block and on the memory."""

    def __init__(self, input_size: int, hidden_size: int, forget_bias: float = 1.0,
                 recurrent_dropout: float = 0.0) -> None:
        super().__init__(input_size, hidden_size, forget_bias, recurrent_dropout)
        self.w_xh = nn.Parameter(glorot_uniform_(torch.empty(input_size, 4 * hidden_size)))
        self.w_hh = nn.Parameter(lstm_ortho_(torch.empty(hidden_size, 4 * hidden_size)))
        self.ln_all_gamma = nn.Parameter(torch.ones(4 * hidden_size))
        self.ln_all_beta = nn.Parameter(torch.zeros(4 * hidden_size))
        self.ln_c_gamma = nn.Parameter(torch.ones(hidden_size))
        self.ln_c_beta = nn.Parameter(torch.zeros(hidden_size))

    def project_input(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        return project(x, self.w_xh, context)

    def step(self, xp: Tensor, state: State, keep: Tensor | None = None) -> State:
        h, c = state
        gates = layer_norm_all(xp + h @ self.w_hh, self.ln_all_gamma, self.ln_all_beta)
        new_c, out_gate = self._lstm_update(gates, c, keep)
        new_h = torch.tanh(layer_norm(new_c, self.ln_c_gamma, self.ln_c_beta)) * out_gate
        return new_h, new_c


class HyperLSTMCell(MagentaCell):
    """Magenta's ``HyperLSTMCell`` with layer norm, as Sketch-RNN builds it.

    A small LayerNormLSTM (``hyper_num_units``, no recurrent dropout) reads ``[x, h]`` and emits, per
    gate block, embeddings that scale the ``W_xh`` and ``W_hh`` contributions (``alpha``) and shift the
    ``W_hh`` ones (``beta``), with magenta's initialisation (Cooijmans' gamma 0.1). The eight
    ``hyper_norm`` projections of magenta are stacked into batched parameters in the order
    ``ix, jx, fx, ox, ih, jh, fh, oh`` (the shifts ``zb``/``beta`` exist for the four ``h`` blocks only).

    State: ``(h, c, hyper_h, hyper_c)``; magenta's flat layout is ``[h, hyper_h, c, hyper_c]``.
    """

    def __init__(self, input_size: int, hidden_size: int, forget_bias: float = 1.0,
                 recurrent_dropout: float = 0.0, hyper_num_units: int = 256, hyper_embedding_size: int = 32) -> None:
        super().__init__(input_size, hidden_size, forget_bias, recurrent_dropout)
        if hyper_num_units < 1 or hyper_embedding_size < 1:
            raise ValueError(f"hyper_num_units and hyper_embedding_size must be positive, "
                             f"got {hyper_num_units}, {hyper_embedding_size}")
        n, emb = hidden_size, hyper_embedding_size
        self.hyper_num_units = hyper_num_units
        self.hyper_embedding_size = emb
        self.hyper_cell = LayerNormLSTMCell(input_size + hidden_size, hyper_num_units, forget_bias)
        self.w_xh = nn.Parameter(glorot_uniform_(torch.empty(input_size, 4 * n)))
        self.w_hh = nn.Parameter(lstm_ortho_(torch.empty(n, 4 * n)))
        self.bias = nn.Parameter(torch.zeros(4 * n))
        # hyper_norm's super_linears: zw (weights 0, bias 1), alpha (constant 0.1 / emb, no bias),
        # zb (gaussian std 0.01, no bias), beta (weights 0, no bias)
        self.zw_w = nn.Parameter(torch.zeros(hyper_num_units, 8 * emb))
        self.zw_b = nn.Parameter(torch.ones(8 * emb))
        self.alpha_w = nn.Parameter(torch.full((8, emb, n), 0.10 / emb))
        self.zb_w = nn.Parameter(torch.randn(hyper_num_units, 4 * emb) * 0.01)
        self.beta_w = nn.Parameter(torch.zeros(4, emb, n))
        self.ln_all_gamma = nn.Parameter(torch.ones(4 * n))
        self.ln_all_beta = nn.Parameter(torch.zeros(4 * n))
        self.ln_c_gamma = nn.Parameter(torch.ones(n))
        self.ln_c_beta = nn.Parameter(torch.zeros(n))

    @property
    def state_size(self) -> int:
        return 2 * (self.hidden_size + self.hyper_num_units)

    def state_from_flat(self, flat: Tensor) -> State:
        n, m = self.hidden_size, self.hyper_num_units
        h, hyper_h, c, hyper_c = flat.split([n, m, n, m], dim=-1)
        return h, c, hyper_h, hyper_c

    def project_input(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        # the main cell's W_xh and the x rows of the hyper cell's W_xh (its input is [x, h])
        return torch.cat([project(x, self.w_xh, context), project(x, self.hyper_cell.w_xh[:self.input_size], context)],
                         dim=-1)

    def step(self, xp: Tensor, state: State, keep: Tensor | None = None) -> State:
        h, c, hyper_h, hyper_c = state
        n, emb = self.hidden_size, self.hyper_embedding_size
        batch = h.shape[:-1]
        xh, hyper_xp = xp.split([4 * n, 4 * self.hyper_num_units], dim=-1)
        hyper_xp = hyper_xp + h @ self.hyper_cell.w_xh[self.input_size:]
        hyper_h, hyper_c = self.hyper_cell.step(hyper_xp, (hyper_h, hyper_c))

        zw = (hyper_h @ self.zw_w + self.zw_b).reshape(*batch, 8, emb)
        alpha = torch.einsum("...ke,ken->...kn", zw, self.alpha_w)
        zb = (hyper_h @ self.zb_w).reshape(*batch, 4, emb)
        beta = torch.einsum("...ke,ken->...kn", zb, self.beta_w)
        xh = xh.reshape(*batch, 4, n)
        hh = (h @ self.w_hh).reshape(*batch, 4, n)
        gates = alpha[..., :4, :] * xh + alpha[..., 4:, :] * hh + beta + self.bias.reshape(4, n)
        gates = layer_norm_all(gates.reshape(*batch, 4 * n), self.ln_all_gamma, self.ln_all_beta)

        new_c, out_gate = self._lstm_update(gates, c, keep)
        new_h = torch.tanh(layer_norm(new_c, self.ln_c_gamma, self.ln_c_beta)) * out_gate
        return new_h, new_c, hyper_h, hyper_c


def make_cell(kind: str, input_size: int, hidden_size: int, recurrent_dropout: float = 0.0,
              **hyper: int) -> MagentaCell:
    """Build magenta's ``lstm`` | ``layer_norm`` | ``hyper`` cell (``hyper`` takes ``hyper_*`` sizes)."""
    if kind == "lstm":
        return LSTMCell(input_size, hidden_size, recurrent_dropout=recurrent_dropout)
    if kind == "layer_norm":
        return LayerNormLSTMCell(input_size, hidden_size, recurrent_dropout=recurrent_dropout)
    if kind == "hyper":
        return HyperLSTMCell(input_size, hidden_size, recurrent_dropout=recurrent_dropout, **hyper)
    raise ValueError(f"unknown cell '{kind}': choose one of {', '.join(CELL_KINDS)}")
