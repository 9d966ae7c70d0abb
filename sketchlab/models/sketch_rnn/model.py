"""Sketch-RNN (Ha & Eck 2017) as magenta's TensorFlow implementation builds it (``sketch_rnn/model.py``).

A batch is ``{"strokes": (B, L + 1, 5), "lengths": (B,)}`` from :class:`sketchlab.data.stroke5.Stroke5Collate`:
stroke-5 rows after magenta's start token ``(0, 0, 1, 0, 0)``, padded with ``(0, 0, 0, 0, 1)``. The
decoder reads ``strokes[:, :-1]`` and predicts ``strokes[:, 1:]``; the encoder reads ``strokes[:, 1:]``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from sketchlab.data.stroke5 import START_TOKEN
from sketchlab.data.strokes import to_stroke3
from sketchlab.models.base import Batch, SketchModel
from sketchlab.models.sketch_rnn import gmm
from sketchlab.models.sketch_rnn.cells import CELL_KINDS, State, glorot_uniform_, make_cell
from sketchlab.models.sketch_rnn.recurrence import CellRunner, bidirectional_final_hidden

#: Magenta's ``S_0``: the decoder's first input, "pen down, start of a stroke".


def super_linear(in_features: int, out_features: int, std: float = 0.001) -> nn.Linear:
    """Magenta's ``super_linear(init_w='gaussian', weight_start=std)``: N(0, std) weights, zero bias."""
    layer = nn.Linear(in_features, out_features)
    nn.init.normal_(layer.weight, std=std)
    nn.init.zeros_(layer.bias)
    return layer


def kl_weight_at(step: int, kl_weight: float, kl_weight_start: float, kl_decay_rate: float) -> float:
    """Magenta's KL annealing: ``kl_weight - (kl_weight - kl_weight_start) * kl_decay_rate ** step``."""
    return kl_weight - (kl_weight - kl_weight_start) * kl_decay_rate ** step


class SketchRNN(SketchModel):
    """Sketch-RNN: bidirectional RNN encoder, autoregressive RNN decoder with a mixture-density output.

    Hyper-parameters and defaults are magenta's (``get_default_hparams``), except that the dropouts
    are given as drop probabilities: ``recurrent_dropout=0.1`` is magenta's
    ``recurrent_dropout_prob=0.9`` keep probability (likewise ``input_dropout``/``output_dropout``).

    Args:
        enc_rnn_size, dec_rnn_size, z_size, num_mixture: sizes, as magenta.
        enc_model, dec_model: ``lstm`` | ``layer_norm`` | ``hyper``.
        use_recurrent_dropout, recurrent_dropout: dropout on each cell's candidate (encoder and decoder).
        use_input_dropout, input_dropout, use_output_dropout, output_dropout: dropout on the decoder's
            inputs / outputs (magenta's ``DropoutWrapper``).
        kl_weight, kl_weight_start, kl_decay_rate, kl_tolerance: the KL term and its annealing.
        conditional: False gives the decoder-only model (no encoder, zero initial state, no KL).
        max_seq_len: default length limit of :meth:`decode`.
        mask_pen_in_eval: mask the pen loss past the sketch end in eval mode (magenta's sampling-time
            ``is_training=False`` model). Default False: magenta validates with ``is_training=1``
            (unmasked), as the paper's eq. 9 defines L_R.
        eval_kl_weight: the KL weight of the loss in eval mode: ``start`` (magenta's valid cost, whose
            kl_weight stays at ``kl_weight_start``; what picks best.pt) or ``annealed`` (the training weight).
        hyper_num_units, hyper_embedding_size: sizes of the HyperLSTM's small network (magenta: 256, 32).
        fast: False keeps the eager reference loop; True runs the recurrences on the native LSTM kernel
            where the maths is identical, else a ``torch.compile``d step (made for a GPU); "auto" picks per
            device: on a CPU the fused recurrence (hand-written backward) of every cell, elsewhere as
            True (see ``CellRunner.path``). Same maths on every path.
        compile_mode: ``torch.compile`` mode of the fast path ("reduce-overhead" uses CUDA graphs).
    """

    def __init__(self, enc_rnn_size: int = 256, dec_rnn_size: int = 512, z_size: int = 128, num_mixture: int = 20,
                 enc_model: str = "lstm", dec_model: str = "lstm",
                 use_recurrent_dropout: bool = True, recurrent_dropout: float = 0.1,
                 use_input_dropout: bool = False, input_dropout: float = 0.1,
                 use_output_dropout: bool = False, output_dropout: float = 0.1,
                 kl_weight: float = 0.5, kl_weight_start: float = 0.01, kl_decay_rate: float = 0.99995,
                 kl_tolerance: float = 0.2, conditional: bool = True, max_seq_len: int = 250,
                 mask_pen_in_eval: bool = False, eval_kl_weight: str = "start", hyper_num_units: int = 256, hyper_embedding_size: int = 32,
                 fast: bool | str = False, compile_mode: str = "default") -> None:
        super().__init__()
        for name, kind in (("enc_model", enc_model), ("dec_model", dec_model)):
            if kind not in CELL_KINDS:
                raise ValueError(f"{name} must be one of {', '.join(CELL_KINDS)}, got '{kind}'")
        for name, p in (("recurrent_dropout", recurrent_dropout), ("input_dropout", input_dropout),
                        ("output_dropout", output_dropout)):
            if not 0.0 <= p < 1.0:
                raise ValueError(f"{name} is a drop probability in [0, 1), got {p}")
        if min(enc_rnn_size, dec_rnn_size, z_size, num_mixture, max_seq_len) < 1:
            raise ValueError("enc_rnn_size, dec_rnn_size, z_size, num_mixture and max_seq_len must be positive")
        if eval_kl_weight not in ("start", "annealed"):
            raise ValueError(f"eval_kl_weight must be 'start' or 'annealed', got '{eval_kl_weight}'")
        if not 0.0 <= kl_decay_rate <= 1.0:
            raise ValueError(f"kl_decay_rate must be in [0, 1], got {kl_decay_rate}")

        self.conditional = conditional
        self._z_size = z_size if conditional else 0
        self.num_mixture = num_mixture
        self.kl_weight, self.kl_weight_start = kl_weight, kl_weight_start
        self.kl_decay_rate, self.kl_tolerance = kl_decay_rate, kl_tolerance
        self.max_seq_len = max_seq_len
        self.mask_pen_in_eval = mask_pen_in_eval
        self.eval_kl_weight = eval_kl_weight
        rec_drop = recurrent_dropout if use_recurrent_dropout else 0.0
        hyper = {"hyper_num_units": hyper_num_units, "hyper_embedding_size": hyper_embedding_size}

        def runner(kind: str, input_size: int, hidden: int) -> CellRunner:
            return CellRunner(make_cell(kind, input_size, hidden, rec_drop, **hyper), fast, compile_mode)

        if conditional:
            self.enc_fw = runner(enc_model, 5, enc_rnn_size)
            self.enc_bw = runner(enc_model, 5, enc_rnn_size)
            self.enc_mu = super_linear(2 * enc_rnn_size, z_size)
            self.enc_presig = super_linear(2 * enc_rnn_size, z_size)
        self.decoder = runner(dec_model, 5 + self._z_size, dec_rnn_size)
        if conditional:
            self.init_state = super_linear(z_size, self.decoder.cell.state_size)
        self.input_dropout = nn.Dropout(input_dropout if use_input_dropout else 0.0)
        self.output_dropout = nn.Dropout(output_dropout if use_output_dropout else 0.0)
        self.output = nn.Linear(dec_rnn_size, gmm.num_outputs(num_mixture))
        # magenta's output_w/output_b come from get_variable without an initialiser: glorot uniform
        glorot_uniform_(self.output.weight.data.t())
        glorot_uniform_(self.output.bias.data)

    # -- pieces -----------------------------------------------------------------------------------
    def _require_conditional(self, what: str) -> None:
        if not self.conditional:
            raise ValueError(f"{what} needs an encoder, but this SketchRNN is unconditional (conditional=False)")

    @staticmethod
    def _unpack(batch: Batch) -> tuple[Tensor, Tensor]:
        if "strokes" not in batch or "lengths" not in batch:
            raise ValueError(f"a Sketch-RNN batch needs 'strokes' and 'lengths' (Stroke5Collate), got {sorted(batch)}")
        strokes, lengths = batch["strokes"], batch["lengths"]
        if strokes.dim() != 3 or strokes.shape[-1] != 5 or strokes.shape[1] < 2:
            raise ValueError(f"'strokes' must be (B, L + 1, 5) with L >= 1, got {tuple(strokes.shape)}")
        return strokes.float(), lengths

    def posterior(self, strokes: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """``(mu, presig)`` of q(z | sketch) from stroke-5 rows (B, L, 5) without the start token."""
        self._require_conditional("the posterior")
        last_h = bidirectional_final_hidden(self.enc_fw, self.enc_bw, strokes.transpose(0, 1), lengths)
        return self.enc_mu(last_h).float(), self.enc_presig(last_h).float()

    def initial_state(self, z: Tensor | None, batch: int, like: Tensor) -> State:
        """The decoder's first state: ``tanh(linear(z))`` when conditional, zeros otherwise.

        Cast to ``like``'s dtype so that under autocast the state keeps one dtype from the first step on.
        """
        cell = self.decoder.cell
        if z is None:
            return cell.zero_state(batch, like)
        return cell.state_from_flat(torch.tanh(self.init_state(z)).to(like.dtype))

    def _decoder_input(self, x: Tensor, z: Tensor | None) -> Tensor:
        if z is None:
            return x
        return torch.cat([x, z.to(x.dtype).unsqueeze(1).expand(-1, x.shape[1], -1)], dim=-1)

    def decode_params(self, x: Tensor, z: Tensor | None, state: State) -> tuple[gmm.Mixture, State]:
        """Run the decoder over inputs ``x`` (B, T, 5) from ``state``: mixture parameters (B, T, ...).

        Every step's input is ``[x_t, z]``. Unless input dropout is active (it drops z's entries per
        step), z goes in as the decoder's per-sequence context, projected once instead of at every step.
        """
        if z is not None and self.training and self.input_dropout.p > 0:
            inputs, context = self.input_dropout(self._decoder_input(x, z)), None
        else:
            inputs, context = self.input_dropout(x), None if z is None else z.to(x.dtype)
        out, state = self.decoder.run(inputs.transpose(0, 1), state, context)
        out = self.output(self.output_dropout(out.transpose(0, 1)))
        return gmm.split_params(out.float(), self.num_mixture), state

    def kl_weight_at(self, step: int) -> float:
        return kl_weight_at(step, self.kl_weight, self.kl_weight_start, self.kl_decay_rate)

    # -- SketchModel ------------------------------------------------------------------------------
    def loss(self, batch: Batch, step: int = 0) -> dict[str, Tensor]:
        """Magenta's cost: ``r_cost + kl_weight(step) * max(KL, kl_tolerance)``.

        z is sampled from the posterior in training and evaluation alike, as magenta's eval model does.
        """
        strokes, lengths = self._unpack(batch)
        if self.decoder.uses_cudagraphs:  # a new iteration: earlier graph outputs may be overwritten
            torch.compiler.cudagraph_mark_step_begin()
        x, target = strokes[:, :-1], strokes[:, 1:]
        batch_size = strokes.shape[0]
        zero = strokes.new_zeros(())
        if self.conditional:
            mu, presig = self.posterior(target, lengths)
            z = mu + torch.exp(presig / 2) * torch.randn_like(mu)
            kl_raw = -0.5 * torch.mean(1 + presig - mu ** 2 - torch.exp(presig))
            kl = torch.clamp(kl_raw, min=self.kl_tolerance)
        else:
            z, kl_raw, kl = None, zero, zero
        mix, _ = self.decode_params(x, z, self.initial_state(z, batch_size, strokes))
        offset, pen = gmm.reconstruction_terms(mix, target, mask_pen=self.mask_pen_in_eval and not self.training)
        recon = offset + pen
        weight = strokes.new_tensor(self.kl_weight_start if not self.training and self.eval_kl_weight == "start"
                                    else self.kl_weight_at(step))
        return {"loss": recon + weight * kl, "recon": recon, "offset_nll": offset, "pen_ce": pen,
                "kl": kl, "kl_raw": kl_raw, "kl_weight": weight}

    def encode(self, batch: Batch, sample: bool = False) -> Tensor:
        self._require_conditional("encode")
        strokes, lengths = self._unpack(batch)
        mu, presig = self.posterior(strokes[:, 1:], lengths)
        return mu + torch.exp(presig / 2) * torch.randn_like(mu) if sample else mu

    @torch.no_grad()
    def decode(self, z: Tensor | None, n: int | None = None, temperature: float = 1.0,
               max_len: int | None = None, greedy: bool = False, generator: torch.Generator | None = None,
               **kwargs: Any) -> list[np.ndarray]:
        """Magenta's ``sample``, batched: one stroke-3 sketch per row of ``z`` (or ``n`` without z).

        The decoder starts from ``S_0`` and feeds back each sampled row, without dropout, until every
        sketch has drawn its end-of-sketch state or ``max_len`` (default ``max_seq_len``) rows;
        sketches are cut before their end row.
        """
        if kwargs:
            raise TypeError(f"unexpected decode arguments: {', '.join(kwargs)}")
        max_len = self.max_seq_len if max_len is None else int(max_len)
        if max_len < 1:
            raise ValueError(f"max_len must be positive, got {max_len}")
        like = next(self.parameters())
        if self.conditional:
            if z is None or z.dim() != 2 or z.shape[1] != self.z_size:
                raise ValueError(f"a conditional SketchRNN decodes latent codes (B, {self.z_size}), "
                                 f"got {None if z is None else tuple(z.shape)}")
            z = z.to(like)
            batch = z.shape[0]
        else:
            if z is not None:
                raise ValueError("an unconditional SketchRNN takes no z: call decode(None, n=...)")
            if n is None or n < 1:
                raise ValueError(f"decode(None, n) needs a positive n, got {n}")
            batch = n

        cell, step = self.decoder.cell, self.decoder.sampling_step
        state = self.initial_state(z, batch, like)
        prev = like.new_tensor(START_TOKEN).expand(batch, 5)
        rows, done = [], torch.zeros(batch, dtype=torch.bool, device=like.device)
        for _ in range(max_len):
            xp = cell.project_input(prev, z)
            state = step(xp, state, None)
            mix = gmm.split_params(self.output(cell.output(state)).float(), self.num_mixture)
            prev = gmm.sample_step(mix, temperature, greedy, generator).to(like.dtype)
            rows.append(prev)
            done |= prev[:, 4] > 0
            if bool(done.all()):
                break
        strokes5 = torch.stack(rows, dim=1).cpu().numpy()
        return [to_stroke3(s) for s in strokes5]
