"""The interface every sketch model implements, so the engine and the sampling tools treat them alike.

Models are plain ``torch.nn.Module``s: they know nothing of Hydra or MLflow. A batch is the dict that the
model's collate function (see ``sketchlab.data``) builds from a list of stroke-3 arrays; drawings the model
produces come back as stroke-3 numpy arrays (dx, dy, pen_lift), in the model's normalised units.
"""

from __future__ import annotations

import abc
from typing import Any

import numpy as np
import torch
from torch import nn

Batch = dict[str, torch.Tensor]


class SketchModel(nn.Module, abc.ABC):
    """Common surface of Sketch-RNN and SketchODE.

    ``loss`` drives training; ``encode``/``decode`` drive reconstruction, sampling and interpolation.
    """

    #: Whether the model has an encoder (``False`` for unconditional Sketch-RNN).
    conditional: bool = True

    @property
    def has_prior(self) -> bool:
        """Whether z ~ N(0, I) means something: a VAE (or no latent at all). An autoencoder's latents don't
        follow N(0, I), so its samples come from jittering the codes of real sketches instead."""
        return True

    @abc.abstractmethod
    def loss(self, batch: Batch, step: int = 0) -> dict[str, torch.Tensor]:
        """Return scalar tensors; ``"loss"`` is what the engine back-propagates, the rest are logged.

        ``step`` is the global optimisation step, for schedules that live in the objective
        (e.g. Sketch-RNN's KL weight annealing).
        """

    @abc.abstractmethod
    def encode(self, batch: Batch, sample: bool = False) -> torch.Tensor:
        """Latent codes (B, z_size) for a batch; the posterior mean unless ``sample``."""

    @abc.abstractmethod
    def decode(self, z: torch.Tensor | None, n: int | None = None, temperature: float = 1.0,
               **kwargs: Any) -> list[np.ndarray]:
        """Draw one sketch per latent row (or ``n`` unconditional sketches when ``z`` is None)."""

    @property
    def z_size(self) -> int:
        return int(getattr(self, "_z_size", 0))

    def dense_decode_kwargs(self, factor: int) -> dict[str, Any] | None:
        """``decode`` kwargs that draw on a ``factor`` times denser time grid (continuous-time models);
        None for models without a notion of resolution."""
        return None

    def reconstruct(self, batch: Batch, temperature: float = 1.0, sigma: float = 0.0,
                    **kwargs: Any) -> list[np.ndarray]:
        """Encode a batch and decode it again; ``sigma`` > 0 jitters the codes by N(0, sigma^2) first
        (sampling around real sketches, for models without a prior)."""
        return self.decode(self._jitter(self.encode(batch), sigma), temperature=temperature, **kwargs)

    @staticmethod
    def _jitter(z: torch.Tensor, sigma: float) -> torch.Tensor:
        return z + sigma * torch.randn_like(z) if sigma else z

    def sample(self, n: int, temperature: float = 1.0, **kwargs: Any) -> list[np.ndarray]:
        """Unconditional samples: z ~ N(0, I) for a conditional model, no z otherwise."""
        device = next(self.parameters()).device
        z = torch.randn(n, self.z_size, device=device) if self.conditional else None
        return self.decode(z, n=n, temperature=temperature, **kwargs)
