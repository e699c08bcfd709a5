"""Additive Gaussian measurement noise, absolute or relative to each sample's clean RMS."""

from __future__ import annotations

import torch

from invdiff.checks import randn
from invdiff.interfaces import NoiseModel


class GaussianNoise(NoiseModel):
    """y = y_clean + s * z, z ~ N(0, I).

    ``std`` gives an absolute s. ``level`` gives s = level * RMS(y_clean) per sample, where the
    RMS runs over all entries of that sample's clean measurement (relative noise: the likelihood
    is then no longer Gaussian in x, so :func:`invdiff.reference.exact_posterior` needs ``std``).
    """

    def __init__(self, std: float | None = None, level: float | None = None) -> None:
        if (std is None) == (level is None):
            raise ValueError("give exactly one of 'std' (absolute) or 'level' (relative)")
        self.std, self.level = std, level

    def scale(self, y_clean: torch.Tensor) -> torch.Tensor:
        """Noise std per sample, broadcastable to ``y_clean``: ``(B, 1, ..., 1)``."""
        view = (y_clean.shape[0],) + (1,) * (y_clean.dim() - 1)
        if self.std is not None:
            return torch.full(view, self.std, dtype=y_clean.dtype, device=y_clean.device)
        rms = y_clean.flatten(1).square().mean(dim=1).sqrt()
        return (self.level * rms).reshape(view)

    def __call__(self, y_clean, generator=None):
        return y_clean + self.scale(y_clean) * randn(y_clean.shape, generator, y_clean)
