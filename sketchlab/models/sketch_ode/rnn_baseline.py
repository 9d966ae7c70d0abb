"""The original SketchODE code's RNN baseline (``encoder_type=rnn decoder_type=rnn``): the same curves, LSTMs.

As ``GRUOneSeqEncoder`` and ``GRUOneSeqDecoder`` of dasayan05/sketchode (``model/arch.py``; LSTMs despite
the names), on the one-curve batches of :class:`sketchlab.data.curves.CurveCollate`, so the paper's
CDE/ODE-against-RNN comparison runs on identical data:

- **encoder**: a one-layer bidirectional LSTM over the curve's ``[x, y, pen]`` points, its outputs
  max-pooled over time, a linear map to the latent code (or its mean and log-variance for the VAE);
- **decoder**: a linear map of z gives the initial ``(h, c)`` of a one-layer LSTM whose input at each step
  is the previous point ``[x, y, pen]`` with z appended; a linear read-out gives the next point's
  ``(x, y)`` and pen-up logit. The first point is given: every curve starts at the origin with the pen down;
- **loss**: the one-curve SketchODE's, smooth-L1 on positions (summed over x, y) plus the pen's binary
  cross-entropy, averaged over all G points as the original (whose first point is the given start and
  costs nothing), and the KL term for the VAE.

Training feeds the true previous point (teacher forcing). In eval mode, validation and test losses
included, the decoder runs free, as the original's: it feeds back its own positions and its pen
thresholded at 0.5, which is also how it draws. Time values are not used: the model is discrete in time,
one step per sample, so it has no denser decoding and no frequency knob.
"""

from __future__ import annotations

from collections.abc import Sequence
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sketchlab.data.curves import curve_to_stroke3
from sketchlab.models.base import Batch, SketchModel
from sketchlab.models.sketch_ode.model import SketchODE, add_kl, check_sizes_and_kl, kl_weight_at, sample_latent


class CurveRNN(SketchModel):
    """Bi-LSTM encoder and LSTM decoder on SketchODE's curves (the original's RNN baseline).

    Args:
        n_hidden: LSTM hidden size of encoder (each direction) and decoder (the original's 64).
        z_size: latent size (48).
        n_points: points decoded by default (match the collate's; the config interpolates it).
        vae, kl_weight, kl_start, kl_end, kl_anneal: the optional VAE and its KL weight schedule.
        pen_threshold: pen-up probability above which a point counts as travelling, both when it is fed back
            while running free and when drawing.
    """

    conditional = True

    def __init__(self, n_hidden: int = 64, z_size: int = 48, n_points: int = 100, vae: bool = False,
                 kl_weight: float = 1.0, kl_start: int = 5000, kl_end: int = 15000, kl_anneal: str = "linear",
                 pen_threshold: float = 0.5) -> None:
        super().__init__()
        check_sizes_and_kl(n_hidden, z_size, kl_anneal, kl_weight)
        if n_points < 2:
            raise ValueError(f"n_points must be at least 2, got {n_points}")
        self._z_size, self.n_hidden, self.n_points = z_size, n_hidden, n_points
        self.vae = vae
        self.kl_weight, self.kl_start, self.kl_end, self.kl_anneal = kl_weight, kl_start, kl_end, kl_anneal
        self.pen_threshold = pen_threshold
        self.encoder = nn.LSTM(3, n_hidden, batch_first=True, bidirectional=True)
        self.to_mean = nn.Linear(2 * n_hidden, z_size)
        self.to_logvar = nn.Linear(2 * n_hidden, z_size) if vae else None
        self.initial = nn.Linear(z_size, 2 * n_hidden)
        self.decoder = nn.LSTM(3 + z_size, n_hidden, batch_first=True)
        self.readout = nn.Linear(n_hidden, 3)

    @property
    def has_prior(self) -> bool:
        """Only the VAE variant is trained towards N(0, I)."""
        return self.vae

    reconstruct = SketchODE.reconstruct  # in the data's units when the batch carries "scale"
    interpolate = SketchODE.interpolate

    @staticmethod
    def _unpack(batch: Batch) -> Tensor:
        if "curve" not in batch:
            raise ValueError(f"the curve RNN needs batch['curve'] (from CurveCollate), got keys {sorted(batch)}")
        curve = batch["curve"]
        if curve.ndim != 3 or curve.shape[-1] != 3 or curve.shape[1] < 2:
            raise ValueError(f"batch['curve'] must be (B, G >= 2, 3), got {tuple(curve.shape)}")
        return curve

    # -- encoding ---------------------------------------------------------------------------------
    def _encode(self, curve: Tensor) -> tuple[Tensor, Tensor | None]:
        pooled = self.encoder(curve)[0].amax(dim=1)
        return self.to_mean(pooled), (self.to_logvar(pooled) if self.to_logvar is not None else None)

    def encode(self, batch: Batch, sample: bool = False) -> Tensor:
        mu, logvar = self._encode(self._unpack(batch))
        if sample:
            return sample_latent(mu, logvar)
        return mu

    # -- decoding ---------------------------------------------------------------------------------
    def _initial_state(self, z: Tensor) -> tuple[Tensor, Tensor]:
        h, c = self.initial(z).unsqueeze(0).chunk(2, dim=-1)
        return h.contiguous(), c.contiguous()

    def _step_inputs(self, points: Tensor, z: Tensor) -> Tensor:
        return torch.cat([points, z.unsqueeze(1).expand(-1, points.shape[1], -1)], dim=-1)

    def teacher_forced(self, z: Tensor, curve: Tensor) -> Tensor:
        """Predictions (B, G - 1, 3) of points 1..G-1 from the true points 0..G-2: positions and pen logits."""
        out, _ = self.decoder(self._step_inputs(curve[:, :-1], z), self._initial_state(z))
        return self.readout(out)

    def free_running(self, z: Tensor, n_points: int, start: Tensor | None = None) -> Tensor:
        """Predictions (B, n_points - 1, 3) after ``start`` (B, 3) (default: the origin, pen down), each step fed
        the previous prediction with its pen thresholded."""
        previous = z.new_zeros(len(z), 1, 3) if start is None else start.unsqueeze(1)
        state = self._initial_state(z)
        outputs = []
        for _ in range(n_points - 1):
            out, state = self.decoder(self._step_inputs(previous, z), state)
            pred = self.readout(out)
            outputs.append(pred)
            pen = (torch.sigmoid(pred[..., 2:]) > self.pen_threshold).to(pred.dtype)
            previous = torch.cat([pred[..., :2], pen], dim=-1)
        return torch.cat(outputs, dim=1)

    @torch.no_grad()
    def decode(self, z: Tensor | None, n: int | None = None, temperature: float = 1.0, n_points: int | None = None,
               scale: Tensor | Sequence[float] | None = None) -> list[np.ndarray]:
        """Stroke-3 drawings of latent codes, ``n_points`` (default: the model's) points each, run free from the
        origin (deterministic: ``temperature`` has no effect). ``scale``: per-sketch factors to data units."""
        if z is None:
            raise ValueError("the curve RNN decodes latent codes; it has no unconditional mode (pass z)")
        n = self.n_points if n_points is None else int(n_points)
        pred = self.free_running(z, n).float()
        xy = torch.cat([pred.new_zeros(len(z), 1, 2), pred[..., :2]], dim=1).cpu().numpy()
        pen = torch.cat([pred.new_zeros(len(z), 1), torch.sigmoid(pred[..., 2])], dim=1).cpu().numpy()
        factors = np.ones(len(z)) if scale is None else np.asarray(torch.as_tensor(scale).cpu(), dtype=np.float64)
        if len(factors) != len(z):
            raise ValueError(f"got {len(factors)} scale factors for {len(z)} latent codes")
        return [curve_to_stroke3(xy[i], pen[i], self.pen_threshold, float(factors[i])) for i in range(len(z))]

    # -- training ---------------------------------------------------------------------------------
    def loss(self, batch: Batch, step: int = 0) -> dict[str, Tensor]:
        curve = self._unpack(batch)
        mu, logvar = self._encode(curve)
        z = sample_latent(mu, logvar) if self.training else mu
        if self.training:
            pred = self.teacher_forced(z, curve)
        else:
            pred = self.free_running(z, curve.shape[1], curve[:, 0])
        pred, target = pred.float(), curve[:, 1:].float()
        n_points = curve.shape[1]  # the given first point enters the averages with zero cost, as the original's
        recon_xy = F.smooth_l1_loss(pred[..., :2], target[..., :2], reduction="none").sum(-1).sum(1).mean() / n_points
        pen_bce = F.binary_cross_entropy_with_logits(pred[..., 2], target[..., 2], reduction="none"
                                                     ).sum(1).mean() / n_points
        out = {"loss": recon_xy + pen_bce, "recon_xy": recon_xy, "pen_bce": pen_bce}
        if logvar is not None:
            add_kl(out, mu, logvar, kl_weight_at(step, self.kl_weight, self.kl_start, self.kl_end, self.kl_anneal))
        return out
