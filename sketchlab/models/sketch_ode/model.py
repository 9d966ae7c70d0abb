"""SketchODE (Das, Yang, Hospedales, Xiang, Song, ICLR 2022): a continuous-time sketch autoencoder.

A batch is ``{"curve": (B, G, 3), "times": (G,), "scale": (B,)}`` from
:class:`sketchlab.data.curves.CurveCollate`: each sketch as one curve ``[x, y, pen]`` in the unit disc,
sampled at shared times in ``[0, T]``. A Neural CDE encodes the curve to a latent code, a
latent-conditioned second-order ODE decodes it (see ``encoder.py`` and ``decoder.py``), and the loss is
the original's: smooth-L1 on the positions (summed over x, y, averaged over points and sketches) plus
the pen's binary cross-entropy, and for the VAE a KL term with an annealed weight. With ``cnf=True`` the
original's CNF term joins it: ``-mean log p`` of the decoder's trajectory (the exact-trace log-density
change along the solve, averaged over output times and sketches; see ``decoder.py``), weighted by the
same annealed weight as the KL term, which the original shares between the two.

Being continuous in time, the decoder draws at any resolution (``decode(z, n_points=...)``), its
latent space interpolates (``interpolate``), and changing the decoder's frequency ω at test time
(``decode(z, omega=...)`` or ``with model.frequency(omega):``) gives the paper's abstraction effect.
"""

from __future__ import annotations

import contextlib
import math
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sketchlab.data.curves import curve_to_stroke3
from sketchlab.models.base import Batch, SketchModel
from sketchlab.models.sketch_ode.decoder import ODEDecoder
from sketchlab.models.sketch_ode.encoder import CDEEncoder, spline_derivative_operator
from sketchlab.models.sketch_ode.solvers import SolverConfig, TimePlan
from sketchlab.models.latent import latent_path

KL_ANNEALING = ("linear", "sigmoid")
#: How many time grids (training grid, dense decoding grids, ...) keep their precomputed fast-path plans.
PLAN_CACHE_SIZE = 8


def kl_weight_at(step: int, weight: float, start: int, end: int, mode: str = "linear") -> float:
    """KL weight at ``step``: 0 before ``start``, ``weight`` after ``end``, rising in between.

    ``linear`` is the original's ramp; ``sigmoid`` a logistic ramp centred between ``start`` and ``end``
    (1/(1 + e^-10 (step - mid)/(end - start)), so about 0.7% at ``start`` and 99.3% at ``end``).
    """
    if mode not in KL_ANNEALING:
        raise ValueError(f"unknown KL annealing '{mode}'; choose one of {', '.join(KL_ANNEALING)}")
    if end <= start:
        return weight if step >= start else 0.0
    if mode == "linear":
        return weight * min(1.0, max(0.0, (step - start) / (end - start)))
    x = 10.0 * (step - (start + end) / 2) / (end - start)
    return weight / (1.0 + math.exp(-x)) if x > -700 else 0.0


def check_sizes_and_kl(n_hidden: int, z_size: int, kl_anneal: str, kl_weight: float) -> None:
    """The checks every SketchODE-family model makes of its widths and KL settings."""
    if n_hidden < 1 or z_size < 1:
        raise ValueError(f"n_hidden and z_size must be positive, got {n_hidden}, {z_size}")
    if kl_anneal not in KL_ANNEALING:
        raise ValueError(f"unknown kl_anneal '{kl_anneal}'; choose one of {', '.join(KL_ANNEALING)}")
    if kl_weight < 0:
        raise ValueError(f"kl_weight must be >= 0, got {kl_weight}")


def sample_latent(mu: Tensor, logvar: Tensor | None) -> Tensor:
    """``mu + sigma * eps`` (the VAE's reparameterised draw); ``mu`` itself without a log-variance."""
    return mu if logvar is None else mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)


def add_kl(out: dict[str, Tensor], mu: Tensor, logvar: Tensor, weight: float) -> dict[str, Tensor]:
    """Add ``weight`` x the KL to N(0, I) (mean over sketches and latent units) to ``out``'s loss."""
    mu, logvar = mu.float(), logvar.float()
    kl = -0.5 * torch.mean(1 + logvar - mu.pow(2) - logvar.exp())
    out.update(loss=out["loss"] + weight * kl, kl=kl, kl_weight=torch.tensor(weight, device=kl.device))
    return out


class _Core(nn.Module):
    """Curve (+ VAE noise) → (prediction, mean[, log-variance]) on one fixed time grid: what CUDA graphs capture."""

    def __init__(self, model: SketchODE, times: Tensor, plan: TimePlan, operator: Tensor) -> None:
        super().__init__()
        self.model = model
        self.times, self.plan, self.operator = times, plan, operator

    def forward(self, curve: Tensor, eps: Tensor | None = None) -> tuple[Tensor, ...]:
        pred, mu, logvar, _ = self.model._run(curve, self.times, self.plan, self.operator, eps)
        return (pred, mu) if logvar is None else (pred, mu, logvar)


class SketchODE(SketchModel):
    """SketchODE: Neural CDE encoder, second- (or first-) order Neural ODE decoder, periodic vector fields.

    Args:
        n_hidden: CDE hidden size and the decoder's position/velocity size (the original's 64).
        z_size: latent size (48).
        enc_arch, dec_arch: hidden widths of the encoder's and decoder's vector-field MLPs.
        omega: frequency ω of the periodic activations (3); ``enc_omega`` overrides it for the encoder.
        learn_omega: learn each layer's frequency as ``sigmoid(p) · ω`` (the original's ``learn_freq``).
        activation: ``cos`` (the original's default) or ``sin``.
        order: decoder dynamics order, 2 (position and velocity, the paper's) or 1.
        time_dependent: the decoder's MLP also sees t (the original's default).
        n_points, t_max: the default decoding grid, ``n_points`` times uniform in ``[0, t_max]`` (match
            the collate's; the configs interpolate them).
        method, step_size, rtol, atol, options, adjoint, backend: the ODE/CDE solver, see
            :class:`~sketchlab.models.sketch_ode.solvers.SolverConfig` (the original: rk4 with the adjoint
            method; ``backend="auto"`` runs fixed-step methods without adjoint on the fast loop).
        spline_index_time: build the CDE's spline on index time and evaluate it on real time, as the
            original did (see ``encoder.py``).
        vae, kl_weight, kl_start, kl_end, kl_anneal: the optional VAE and its KL weight schedule.
        cnf: add the original's CNF term (``model/cnf.py``), weighted by the KL schedule above (the
            original's one annealed weight for both); training steps skip its solve while that weight
            is 0, as the original does; evaluation always reports it. Off, nothing of it runs.
        pen_threshold: pen-up probability above which decoded samples count as travelling.
        cuda_graph: on CUDA, capture each training step's solve (forward and backward) in a CUDA graph
            (fast backend, float32; autocast falls back to eager).
        fused: on the fast backend on a CPU, run each solve as one autograd Function with a hand-written
            backward (``fused.py``; same values, gradients to rounding); False keeps the plain autograd loop.
    """

    conditional = True

    def __init__(self, n_hidden: int = 64, z_size: int = 48, enc_arch: Sequence[int] = (32, 32),
                 dec_arch: Sequence[int] = (32, 32), omega: float = 3.0, enc_omega: float | None = None,
                 learn_omega: bool = False, activation: str = "cos", order: int = 2, time_dependent: bool = True,
                 n_points: int = 100, t_max: float = 5.0, method: str = "rk4", step_size: float | None = None,
                 rtol: float = 1e-4, atol: float = 1e-6, options: dict[str, Any] | None = None, adjoint: bool = False,
                 backend: str = "auto", spline_index_time: bool = False, vae: bool = False, kl_weight: float = 1.0,
                 kl_start: int = 5000, kl_end: int = 15000, kl_anneal: str = "linear", pen_threshold: float = 0.5,
                 cuda_graph: bool = False, cnf: bool = False, fused: bool = True) -> None:
        super().__init__()
        check_sizes_and_kl(n_hidden, z_size, kl_anneal, kl_weight)
        if n_points < 2 or t_max <= 0:
            raise ValueError(f"need n_points >= 2 and t_max > 0, got {n_points}, {t_max}")
        self._z_size = z_size
        self.n_points, self.t_max = n_points, float(t_max)
        self.solver = SolverConfig(method=method, step_size=step_size, rtol=rtol, atol=atol,
                                   options=dict(options) if options else None, adjoint=adjoint, backend=backend,
                                   fused=fused)
        if cuda_graph and not self.solver.fast:
            raise ValueError("cuda_graph needs the fast backend (a fixed-step method, adjoint off, no extra options)")
        if cuda_graph and cnf:
            raise ValueError("cnf does not run in CUDA graphs (its solve comes and goes with its weight); "
                             "set model.net.cuda_graph=false with model.net.cnf=true")
        self.cnf = cnf
        self.vae = vae
        self.kl_weight, self.kl_start, self.kl_end, self.kl_anneal = kl_weight, kl_start, kl_end, kl_anneal
        self.pen_threshold = pen_threshold
        self.cuda_graph = cuda_graph
        self.encoder = CDEEncoder(3, n_hidden, z_size, enc_arch, omega if enc_omega is None else enc_omega,
                                  learn_omega, activation, vae, spline_index_time)
        self.decoder = ODEDecoder(3, n_hidden, z_size, order, dec_arch, omega, learn_omega, activation,
                                  time_dependent)
        self._plans: OrderedDict[tuple, tuple[TimePlan, Tensor]] = OrderedDict()
        self._graphs: dict[tuple, nn.Module] = {}

    # -- solving ----------------------------------------------------------------------------------
    def _plan(self, times: Tensor) -> tuple[tuple, TimePlan, Tensor]:
        """The fast backend's plan and CDE derivative operator for ``times`` (cached per grid)."""
        key = (tuple(times.detach().cpu().tolist()), times.device, times.dtype)
        if key in self._plans:
            self._plans.move_to_end(key)
        else:
            plan = TimePlan.build(times, self.solver.method, self.solver.step_size)
            operator = spline_derivative_operator(times, plan.stage_times.flatten(), self.encoder.spline_index_time)
            self._plans[key] = (plan, operator)
            while len(self._plans) > PLAN_CACHE_SIZE:
                self._plans.popitem(last=False)
        return (key, *self._plans[key])

    def _run(self, curve: Tensor, times: Tensor, plan: TimePlan | None, operator: Tensor | None,
             eps: Tensor | None = None, logp: bool = False) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
        """Encode and decode: (prediction (B, G, 3), latent mean, log-variance or None, log-density
        change (B, G) or None; the last only with ``logp``)."""
        mu, logvar = self.encoder(curve, times, self.solver, plan, operator)
        z = mu if (logvar is None or eps is None) else mu + eps * torch.exp(0.5 * logvar)
        if logp:
            pred, density = self.decoder.forward_with_logp(z, times, self.solver, plan)
            return pred, mu, logvar, density
        return self.decoder(z, times, self.solver, plan), mu, logvar, None

    def _forward(self, curve: Tensor, times: Tensor, eps: Tensor | None,
                 logp: bool = False) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
        if not self.solver.fast:
            return self._run(curve, times, None, None, eps, logp)
        key, plan, operator = self._plan(times)
        use_graph = (self.cuda_graph and curve.is_cuda and self.training and torch.is_grad_enabled()
                     and not torch.is_autocast_enabled(curve.device.type))
        if not use_graph:
            return self._run(curve, times, plan, operator, eps, logp)
        graph_key = (key, tuple(curve.shape), curve.dtype, eps is not None)
        graphed = self._graphs.get(graph_key)
        args = (curve,) if eps is None else (curve, eps)
        if graphed is None:
            graphed = torch.cuda.make_graphed_callables(_Core(self, times, plan, operator), args,
                                                        allow_unused_input=True)
            self._graphs[graph_key] = graphed
        out = graphed(*args)
        return out[0], out[1], (out[2] if len(out) > 2 else None), None

    # -- training ---------------------------------------------------------------------------------
    @staticmethod
    def _unpack(batch: Batch) -> tuple[Tensor, Tensor]:
        if "curve" not in batch or "times" not in batch:
            raise ValueError(f"a SketchODE batch needs 'curve' and 'times' (from CurveCollate), "
                             f"got keys {sorted(batch)}")
        curve, times = batch["curve"], batch["times"]
        if curve.ndim != 3 or curve.shape[-1] != 3:
            raise ValueError(f"batch['curve'] must be (B, G, 3), got {tuple(curve.shape)}")
        if times.ndim != 1 or len(times) != curve.shape[1]:
            raise ValueError(f"batch['times'] must be ({curve.shape[1]},), got {tuple(times.shape)}")
        return curve, times

    def loss(self, batch: Batch, step: int = 0) -> dict[str, Tensor]:
        curve, times = self._unpack(batch)
        eps = None
        if self.vae and self.training:
            eps = torch.randn(curve.shape[0], self.z_size, device=curve.device, dtype=curve.dtype)
        weight = kl_weight_at(step, self.kl_weight, self.kl_start, self.kl_end, self.kl_anneal)
        with_cnf = self.cnf and (weight > 0 or not self.training)
        pred, mu, logvar, logp = self._forward(curve, times, eps, with_cnf)
        pred, target = pred.float(), curve.float()
        recon_xy = F.smooth_l1_loss(pred[..., :2], target[..., :2], reduction="none").sum(-1).mean()
        pen_bce = F.binary_cross_entropy_with_logits(pred[..., 2], target[..., 2])
        out = {"loss": recon_xy + pen_bce, "recon_xy": recon_xy, "pen_bce": pen_bce}
        if logvar is not None:
            add_kl(out, mu, logvar, weight)
        if logp is not None:
            cnf = -logp.float().mean()  # the original's cnf_loss: over output times (t = 0 included) and sketches
            out.update(loss=out["loss"] + weight * cnf, cnf=cnf, cnf_weight=torch.tensor(weight, device=cnf.device))
        return out

    # -- encoding and decoding --------------------------------------------------------------------
    def encode(self, batch: Batch, sample: bool = False) -> Tensor:
        curve, times = self._unpack(batch)
        _, plan, operator = self._plan(times) if self.solver.fast else (None, None, None)
        mu, logvar = self.encoder(curve, times, self.solver, plan, operator)
        return sample_latent(mu, logvar) if sample else mu

    def time_grid(self, n_points: int | None = None, t_max: float | None = None) -> Tensor:
        """``n_points`` (default: the model's) times uniform in ``[0, t_max]`` (default: the model's T)."""
        n = self.n_points if n_points is None else int(n_points)
        if n < 2:
            raise ValueError(f"n_points must be at least 2, got {n}")
        device = next(self.parameters()).device
        return torch.linspace(0.0, self.t_max if t_max is None else float(t_max), n, device=device)

    @contextlib.contextmanager
    def frequency(self, omega: float | None) -> Iterator[None]:
        """Decode with the decoder's frequency set to ``omega`` (None: as trained); the paper's abstraction."""
        activations = self.decoder.dynamics.activations()
        if omega is not None and omega <= 0:
            raise ValueError(f"omega must be positive, got {omega}")
        previous = [a.override for a in activations]
        for a in activations:
            a.override = omega
        try:
            yield
        finally:
            for a, value in zip(activations, previous):
                a.override = value

    def decode_curves(self, z: Tensor, times: Tensor | None = None, omega: float | None = None) -> Tensor:
        """The decoder's raw output (B, N, 3): positions and pen-up logits at ``times`` (default grid)."""
        times = self.time_grid() if times is None else times
        plan = self._plan(times)[1] if self.solver.fast else None
        with self.frequency(omega):
            return self.decoder(z, times, self.solver, plan)

    @torch.no_grad()
    def decode(self, z: Tensor | None, n: int | None = None, temperature: float = 1.0, n_points: int | None = None,
               t_max: float | None = None, omega: float | None = None,
               scale: Tensor | Sequence[float] | None = None) -> list[np.ndarray]:
        """Stroke-3 drawings of latent codes (the decoder is deterministic: ``temperature`` has no effect).

        ``n_points``/``t_max`` choose the time grid (denser grids draw the same curve more finely),
        ``omega`` the decoder frequency, ``scale`` per-sketch factors back to data units (a batch's
        ``"scale"``); without it drawings are in unit-disc units.
        """
        if z is None:
            raise ValueError("SketchODE decodes latent codes; it has no unconditional mode (pass z)")
        out = self.decode_curves(z, self.time_grid(n_points, t_max).to(z.device), omega).float()
        pen = torch.sigmoid(out[..., 2]).cpu().numpy()
        xy = out[..., :2].cpu().numpy()
        factors = np.ones(len(xy)) if scale is None else np.asarray(torch.as_tensor(scale).cpu(), dtype=np.float64)
        if len(factors) != len(xy):
            raise ValueError(f"got {len(factors)} scale factors for {len(xy)} latent codes")
        return [curve_to_stroke3(xy[i], pen[i], self.pen_threshold, float(factors[i])) for i in range(len(xy))]

    def reconstruct(self, batch: Batch, temperature: float = 1.0, sigma: float = 0.0,
                    **kwargs: Any) -> list[np.ndarray]:
        """Encode and decode a batch, back in the data's units when the batch carries ``"scale"``."""
        if "scale" in batch and "scale" not in kwargs:
            kwargs["scale"] = batch["scale"]
        return self.decode(self._jitter(self.encode(batch), sigma), temperature=temperature, **kwargs)

    def interpolate(self, z_a: Tensor, z_b: Tensor, steps: int = 8, method: str = "lerp",
                    **decode_kw: Any) -> list[np.ndarray]:
        """Drawings along the latent path from ``z_a`` to ``z_b`` (each (z,)), endpoints included.
        ``lerp`` is the original's linear path; ``slerp`` the spherical one."""
        return self.decode(latent_path(z_a, z_b, steps, method), **decode_kw)

    @property
    def has_prior(self) -> bool:
        """Only the VAE variant is trained towards N(0, I); the default autoencoder is sampled around data."""
        return self.vae

    def dense_decode_kwargs(self, factor: int) -> dict[str, Any]:
        """A grid ``factor`` times denser that keeps every time of the default grid."""
        if factor < 1:
            raise ValueError(f"factor must be >= 1, got {factor}")
        return {"n_points": (self.n_points - 1) * factor + 1}

    # -- accounting -------------------------------------------------------------------------------
    def nfe(self) -> dict[str, int]:
        """Vector-field evaluations so far (eager calls only; CUDA-graph replays are not counted)."""
        return {"encoder": self.encoder.field.nfe, "decoder": self.decoder.dynamics.nfe}

    def reset_nfe(self) -> None:
        self.encoder.field.nfe = 0
        self.decoder.dynamics.nfe = 0
