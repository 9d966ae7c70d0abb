"""Sketch-RNN's output distribution: a mixture of bivariate normals for the offsets, a softmax for the pen.

Follows magenta's ``model.py``: ``get_mixture_coef`` (parameter layout), ``tf_2d_normal`` and
``get_lossfunc`` (the reconstruction loss, in density space with its ``1e-6`` guard), and ``sample``
with ``adjust_temp`` / ``get_pi_idx`` / ``sample_gaussian_2d`` (temperature sampling), vectorised
over a batch.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

#: Magenta's guard inside ``-log(sum_k pi_k N_k + eps)``.
NLL_EPS = 1e-6


def num_outputs(num_mixture: int) -> int:
    """Width of the output layer: 3 pen logits and 6 numbers per component."""
    return 3 + 6 * num_mixture


class Mixture(NamedTuple):
    """Distribution parameters, each ``(..., M)`` except the pen ``(..., 3)``."""

    pi: Tensor          # mixture weights (softmax)
    mu1: Tensor
    mu2: Tensor
    sigma1: Tensor      # exp of the raw outputs
    sigma2: Tensor
    corr: Tensor        # tanh of the raw outputs
    pen_logits: Tensor

    @property
    def pen(self) -> Tensor:
        return torch.softmax(self.pen_logits, dim=-1)


def split_params(out: Tensor, num_mixture: int) -> Mixture:
    """Magenta's ``get_mixture_coef``: ``[pen(3), pi, mu1, mu2, sigma1, sigma2, corr]`` (M each)."""
    if out.shape[-1] != num_outputs(num_mixture):
        raise ValueError(f"expected {num_outputs(num_mixture)} outputs for {num_mixture} components, "
                         f"got {out.shape[-1]}")
    pen_logits = out[..., :3]
    pi, mu1, mu2, s1, s2, corr = out[..., 3:].split(num_mixture, dim=-1)
    return Mixture(torch.softmax(pi, dim=-1), mu1, mu2, torch.exp(s1), torch.exp(s2), torch.tanh(corr), pen_logits)


def bivariate_normal(x1: Tensor, x2: Tensor, mu1: Tensor, mu2: Tensor, s1: Tensor, s2: Tensor,
                     rho: Tensor) -> Tensor:
    """Density of a correlated bivariate normal (eqs. 24-25 of Graves 2013, magenta's ``tf_2d_normal``)."""
    norm1, norm2 = x1 - mu1, x2 - mu2
    s1s2 = s1 * s2
    z = (norm1 / s1) ** 2 + (norm2 / s2) ** 2 - 2 * rho * norm1 * norm2 / s1s2
    neg_rho = 1 - rho ** 2
    return torch.exp(-z / (2 * neg_rho)) / (2 * math.pi * s1s2 * torch.sqrt(neg_rho))


def offset_nll(mix: Mixture, dx: Tensor, dy: Tensor) -> Tensor:
    """``-log(sum_k pi_k N(dx, dy | k) + 1e-6)`` per point; ``dx``/``dy`` shaped like ``mix.pi[..., 0]``."""
    density = bivariate_normal(dx.unsqueeze(-1), dy.unsqueeze(-1), mix.mu1, mix.mu2, mix.sigma1, mix.sigma2,
                               mix.corr)
    return -torch.log((density * mix.pi).sum(-1) + NLL_EPS)


def pen_cross_entropy(pen_logits: Tensor, pen_target: Tensor) -> Tensor:
    """Softmax cross-entropy with a (one-hot) target distribution, per point."""
    return -(pen_target * F.log_softmax(pen_logits, dim=-1)).sum(-1)


def reconstruction_terms(mix: Mixture, target: Tensor, mask_pen: bool) -> tuple[Tensor, Tensor]:
    """Magenta's ``get_lossfunc``, averaged over every (sketch, step) of ``target`` (B, T, 5).

    The offset term is zeroed past each sketch's end (target ``p3 = 1``); the pen term is kept there
    (the model learns to keep predicting the end), except with ``mask_pen`` (magenta's
    ``is_training=False``). Both are divided by ``B * T``, so the padding length sets the scale.
    """
    target = target.float()
    not_end = 1.0 - target[..., 4]
    offsets = offset_nll(mix, target[..., 0], target[..., 1]) * not_end
    pen = pen_cross_entropy(mix.pen_logits, target[..., 2:5])
    if mask_pen:
        pen = pen * not_end
    return offsets.mean(), pen.mean()


# -- sampling (magenta's sample()) ----------------------------------------------------------------

def adjust_temp(pdf: Tensor, temperature: float) -> Tensor:
    """Magenta's ``adjust_temp``: ``pdf ** (1 / T)`` renormalised, along the last axis."""
    return torch.softmax(torch.log(pdf) / temperature, dim=-1)


def _pick(pdf: Tensor, temperature: float, greedy: bool, generator: torch.Generator | None) -> Tensor:
    """Magenta's ``get_pi_idx`` per row: the argmax when greedy, else a draw from the tempered pdf."""
    if greedy:
        return pdf.argmax(-1)
    return torch.multinomial(adjust_temp(pdf, temperature), 1, generator=generator).squeeze(-1)


def sample_step(mix: Mixture, temperature: float = 1.0, greedy: bool = False,
                generator: torch.Generator | None = None) -> Tensor:
    """One stroke-5 row per batch row from parameters shaped ``(B, M)`` / ``(B, 3)``.

    As magenta: the component and the pen state are drawn with the tempered pdfs; magenta passes
    ``sqrt(T)`` to ``sample_gaussian_2d``, which multiplies each sigma by its square, so the standard
    deviations scale by ``T``. Greedy mode takes the argmax component and pen state and the mean offset.
    """
    if not greedy and temperature <= 0:
        raise ValueError(f"temperature must be > 0 (or use greedy=True), got {temperature}")
    idx = _pick(mix.pi, temperature, greedy, generator).unsqueeze(-1)
    pen_idx = _pick(mix.pen, temperature, greedy, generator)

    def chosen(p: Tensor) -> Tensor:
        return p.gather(-1, idx).squeeze(-1)

    mu1, mu2 = chosen(mix.mu1), chosen(mix.mu2)
    if greedy:
        dx, dy = mu1, mu2
    else:
        root = math.sqrt(temperature)
        s1, s2, rho = chosen(mix.sigma1) * root * root, chosen(mix.sigma2) * root * root, chosen(mix.corr)
        e1, e2 = torch.randn((2, *mu1.shape), generator=generator, device=mu1.device, dtype=mu1.dtype)
        dx = mu1 + s1 * e1
        dy = mu2 + s2 * (rho * e1 + torch.sqrt(1 - rho ** 2) * e2)  # Cholesky factor of the covariance
    return torch.cat([dx.unsqueeze(-1), dy.unsqueeze(-1), F.one_hot(pen_idx, 3).to(dx.dtype)], dim=-1)
