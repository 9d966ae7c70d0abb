"""SketchODE's strokewise mode (the original's ``rep=strokewise``): one CDE and one ODE per stroke.

As the original's ``CDEStrokewiseEncoder``/``ODEStrokewiseDecoder`` (``model/arch.py``) and their loss
(``fit_ae_oneseq.py: loss_strokewise``):

- **encoder**: a Neural CDE runs over each stroke's ``[x, y, t]`` (no pen channel), on the stroke's own time
  grid ``[0, T]``. The first stroke starts from zero; each later one from ``LeakyReLU(Linear(s))``, where ``s``
  is the previous stroke's hidden path max-pooled over time. Those handed-on states, max-pooled over the
  strokes, map linearly to the latent code (or its mean and log-variance for the VAE);
- **decoder**: the second-order ODE of the one-curve model, run once per stroke over ``[0, T]``: the first
  stroke from the linear map of z, each later one from ``LeakyReLU(Linear(s))`` of the previous stroke's
  state ``[position, velocity]`` max-pooled over time. The read-out gives the stroke's absolute ``(x, y)``; a
  linear "finish" classifier on the same pooled state says whether the sketch ends after this stroke;
- **loss**: smooth-L1 on the stroke points (summed over x, y) plus the finish classifier's cross-entropy
  (label 1 on each sketch's last stroke), and the KL term for the VAE.

Departures from the original, both so that a sketch's numbers do not depend on the batch it sits in: the
padding strokes of shorter sketches are left out of the encoder's pooling (the original pooled the codes
of its all-zero filler strokes too), and both loss terms average over real strokes (the original averaged
over the padded batch, so the loss shrank when a batch held one sketch of many strokes). Only the sketches
that still have a stroke ``i`` are solved for stroke ``i``.

Decoding draws strokes until the finish classifier says so (argmax, as the original) or ``max_strokes``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sketchlab.data.strokewise import strokes_to_stroke3
from sketchlab.models.base import Batch, SketchModel
from sketchlab.models.sketch_ode.decoder import ODEDecoder
from sketchlab.models.sketch_ode.encoder import CDEEncoder
from sketchlab.models.sketch_ode.model import SketchODE, add_kl, check_sizes_and_kl, kl_weight_at, sample_latent
from sketchlab.models.sketch_ode.solvers import SolverConfig


class StrokewiseSketchODE(SketchModel):
    """SketchODE with one CDE and one ODE per stroke and a per-stroke finish classifier.

    Args:
        n_hidden, z_size, enc_arch, dec_arch, omega, enc_omega, learn_omega, activation, order, time_dependent,
        method, step_size, rtol, atol, options, adjoint, backend, spline_index_time, vae, kl_weight, kl_start,
        kl_end, kl_anneal: as :class:`~sketchlab.models.sketch_ode.SketchODE`.
        n_points, t_max: each stroke's default time grid, ``n_points`` times uniform in ``[0, t_max]`` (match
            the collate's; the config interpolates them).
        max_strokes: most strokes drawn when decoding (the finish classifier usually stops earlier).
    """

    conditional = True

    def __init__(self, n_hidden: int = 64, z_size: int = 48, enc_arch: Sequence[int] = (32, 32),
                 dec_arch: Sequence[int] = (32, 32), omega: float = 3.0, enc_omega: float | None = None,
                 learn_omega: bool = False, activation: str = "cos", order: int = 2, time_dependent: bool = True,
                 n_points: int = 100, t_max: float = 5.0, max_strokes: int = 16, method: str = "rk4",
                 step_size: float | None = None, rtol: float = 1e-4, atol: float = 1e-6,
                 options: dict[str, Any] | None = None, adjoint: bool = False, backend: str = "auto",
                 spline_index_time: bool = False, vae: bool = False, kl_weight: float = 1.0, kl_start: int = 5000,
                 kl_end: int = 15000, kl_anneal: str = "linear") -> None:
        super().__init__()
        check_sizes_and_kl(n_hidden, z_size, kl_anneal, kl_weight)
        if n_points < 2 or t_max <= 0:
            raise ValueError(f"need n_points >= 2 and t_max > 0, got {n_points}, {t_max}")
        if max_strokes < 1:
            raise ValueError(f"max_strokes must be at least 1, got {max_strokes}")
        self._z_size = z_size
        self.n_points, self.t_max, self.max_strokes = n_points, float(t_max), max_strokes
        self.solver = SolverConfig(method=method, step_size=step_size, rtol=rtol, atol=atol,
                                   options=dict(options) if options else None, adjoint=adjoint, backend=backend)
        self.vae = vae
        self.kl_weight, self.kl_start, self.kl_end, self.kl_anneal = kl_weight, kl_start, kl_end, kl_anneal
        self.encoder = CDEEncoder(2, n_hidden, z_size, enc_arch, omega if enc_omega is None else enc_omega,
                                  learn_omega, activation, vae, spline_index_time)
        self.encoder_handover = nn.Sequential(nn.Linear(n_hidden, n_hidden), nn.LeakyReLU())
        self.decoder = ODEDecoder(2, n_hidden, z_size, order, dec_arch, omega, learn_omega, activation,
                                  time_dependent)
        state = order * n_hidden
        self.decoder_handover = nn.Sequential(nn.Linear(state, state), nn.LeakyReLU())
        self.finish = nn.Linear(state, 2)
        self._plans: OrderedDict = OrderedDict()  # SketchODE._plan's cache

    # Shared with the one-curve model: the solver plan cache, time grids, the ω override, reconstruction in the
    # data's units (a batch's "scale") and latent interpolation only use attributes both models have.
    _plan = SketchODE._plan
    time_grid = SketchODE.time_grid
    frequency = SketchODE.frequency
    reconstruct = SketchODE.reconstruct
    interpolate = SketchODE.interpolate
    dense_decode_kwargs = SketchODE.dense_decode_kwargs

    @property
    def has_prior(self) -> bool:
        """Only the VAE variant is trained towards N(0, I)."""
        return self.vae

    @staticmethod
    def _unpack(batch: Batch) -> tuple[Tensor, Tensor, Tensor]:
        missing = {"strokes", "n_strokes", "times"} - set(batch)
        if missing:
            raise ValueError(f"a strokewise SketchODE batch needs {sorted(missing)} (from StrokewiseCollate), "
                             f"got keys {sorted(batch)}")
        strokes, n_strokes, times = batch["strokes"], batch["n_strokes"], batch["times"]
        if strokes.ndim != 4 or strokes.shape[-1] != 2:
            raise ValueError(f"batch['strokes'] must be (B, S, G, 2), got {tuple(strokes.shape)}")
        if times.ndim != 1 or len(times) != strokes.shape[2]:
            raise ValueError(f"batch['times'] must be ({strokes.shape[2]},), got {tuple(times.shape)}")
        if (n_strokes.shape != strokes.shape[:1] or bool((n_strokes < 1).any())
                or int(n_strokes.max()) > strokes.shape[1]):
            raise ValueError(f"batch['n_strokes'] must hold (B,) counts in [1, {strokes.shape[1]}], got {n_strokes}")
        return strokes, n_strokes, times

    def _solver_plan(self, times: Tensor) -> tuple[Any, Any]:
        return self._plan(times)[1:] if self.solver.fast else (None, None)

    # -- encoding ---------------------------------------------------------------------------------
    def _encode(self, strokes: Tensor, n_strokes: Tensor, times: Tensor) -> tuple[Tensor, Tensor | None]:
        """Latent mean (B, z) and log-variance or None, one CDE solve per stroke index."""
        plan, operator = self._solver_plan(times)
        batch, width = strokes.shape[0], self.encoder.n_hidden
        state = strokes.new_zeros(batch, width)
        pooled = strokes.new_full((batch, width), float("-inf"))
        for i in range(int(n_strokes.max())):
            rows = torch.nonzero(n_strokes > i).squeeze(1)  # sketches with an i-th stroke; nested in i
            path = self.encoder.hidden_path(strokes[rows, i], times, self.solver, plan, operator, z0=state[rows])
            handed = self.encoder_handover(path.amax(dim=1))
            state = state.index_copy(0, rows, handed)
            pooled = pooled.index_copy(0, rows, torch.maximum(pooled[rows], handed))
        logvar = self.encoder.to_logvar(pooled) if self.encoder.to_logvar is not None else None
        return self.encoder.to_mean(pooled), logvar

    def encode(self, batch: Batch, sample: bool = False) -> Tensor:
        strokes, n_strokes, times = self._unpack(batch)
        mu, logvar = self._encode(strokes, n_strokes, times)
        if sample:
            return sample_latent(mu, logvar)
        return mu

    # -- decoding ---------------------------------------------------------------------------------
    def _stroke(self, z: Tensor, times: Tensor, init: Tensor | None, plan: Any) -> tuple[Tensor, Tensor, Tensor]:
        """One stroke for each row of z: points (b, G, 2), finish logits (b, 2), the next stroke's initial state."""
        n_state = self.decoder.dynamics.order * self.decoder.n_hidden
        states = self.decoder.states(z, times, self.solver, plan, init=init)[..., :n_state]
        summary = states.amax(dim=0)
        points = self.decoder.readout(states[..., :self.decoder.n_hidden]).transpose(0, 1)
        return points, self.finish(summary), self.decoder_handover(summary)

    def decode_strokes(self, z: Tensor, times: Tensor | None = None, omega: float | None = None,
                       max_strokes: int | None = None) -> list[list[Tensor]]:
        """Each latent row's strokes (each (N, 2) at ``times``, default grid), up to and including the first
        one the finish classifier ends on, at most ``max_strokes`` (default: the model's)."""
        times = self.time_grid() if times is None else times
        limit = self.max_strokes if max_strokes is None else int(max_strokes)
        plan, _ = self._solver_plan(times)
        drawn: list[list[Tensor]] = [[] for _ in range(len(z))]
        active = torch.arange(len(z), device=z.device)
        init: Tensor | None = None
        with self.frequency(omega):
            for _ in range(limit):
                points, finish, handed = self._stroke(z[active], times, init, plan)
                for row, stroke in zip(active.tolist(), points):
                    drawn[row].append(stroke)
                going = finish.argmax(dim=-1) == 0
                active, init = active[going], handed[going]
                if len(active) == 0:
                    break
        return drawn

    @torch.no_grad()
    def decode(self, z: Tensor | None, n: int | None = None, temperature: float = 1.0, n_points: int | None = None,
               t_max: float | None = None, omega: float | None = None, scale: Tensor | Sequence[float] | None = None,
               max_strokes: int | None = None) -> list[np.ndarray]:
        """Stroke-3 drawings of latent codes (deterministic: ``temperature`` has no effect).

        ``n_points``/``t_max`` choose each stroke's time grid, ``omega`` the decoder frequency, ``scale``
        per-sketch factors back to data units (a batch's ``"scale"``), ``max_strokes`` the stroke limit.
        """
        if z is None:
            raise ValueError("the strokewise SketchODE decodes latent codes; it has no unconditional mode (pass z)")
        drawn = self.decode_strokes(z, self.time_grid(n_points, t_max).to(z.device), omega, max_strokes)
        factors = np.ones(len(z)) if scale is None else np.asarray(torch.as_tensor(scale).cpu(), dtype=np.float64)
        if len(factors) != len(z):
            raise ValueError(f"got {len(factors)} scale factors for {len(z)} latent codes")
        return [strokes_to_stroke3([s.float().cpu().numpy() for s in strokes], float(f))
                for strokes, f in zip(drawn, factors)]

    # -- training ---------------------------------------------------------------------------------
    def loss(self, batch: Batch, step: int = 0) -> dict[str, Tensor]:
        strokes, n_strokes, times = self._unpack(batch)
        mu, logvar = self._encode(strokes, n_strokes, times)
        z = sample_latent(mu, logvar) if self.training else mu
        plan, _ = self._solver_plan(times)
        recon_sum = strokes.new_zeros(())
        finish_sum = strokes.new_zeros(())
        init = None
        for i in range(int(n_strokes.max())):
            rows = torch.nonzero(n_strokes > i).squeeze(1)
            points, finish, handed = self._stroke(z[rows], times, init, plan)
            target = strokes[rows, i]
            error = F.smooth_l1_loss(points.float(), target.float(), reduction="none")
            recon_sum = recon_sum + error.sum(-1).mean(-1).sum()
            last = (n_strokes[rows] == i + 1).long()
            finish_sum = finish_sum + F.cross_entropy(finish.float(), last, reduction="sum")
            # the next stroke exists only for the sketches that do not end here; `rows` at i + 1 is that subset
            init = handed[last == 0]
        n_real = n_strokes.sum().to(recon_sum.dtype)
        recon_xy, finish_ce = recon_sum / n_real, finish_sum / n_real
        out = {"loss": recon_xy + finish_ce, "recon_xy": recon_xy, "finish_ce": finish_ce}
        if logvar is not None:
            add_kl(out, mu, logvar, kl_weight_at(step, self.kl_weight, self.kl_start, self.kl_end, self.kl_anneal))
        return out
