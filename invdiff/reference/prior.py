"""Gaussian random field prior on an n x n grid of the unit square."""

from __future__ import annotations

import torch

from invdiff.checks import generator_device
from invdiff.interfaces import Prior
from invdiff.runtime import torch_threads


def pixel_centres(n: int) -> torch.Tensor:
    """Centres of an n x n grid of the unit square, row-major, row 0 on top: ``(n*n, 2)`` as
    (x to the right, y up), float64."""
    c = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    rows, cols = torch.meshgrid(c, c, indexing="ij")
    return torch.stack([cols.flatten(), (1.0 - rows).flatten()], dim=1)


class GaussianFieldPrior(Prior):
    """x ~ N(mean, C) per channel with C_ij = variance exp(-|p_i - p_j|^2 / (2 l^2)).

    A nugget ``nugget * variance`` on the diagonal keeps C well conditioned; it is part of the
    prior (the exact posterior uses the same C). Sampling uses a symmetric square root of C from
    its eigendecomposition, computed once in float64 on one thread (so a seed gives the same
    field whatever the thread settings).
    """

    reference = "linear-gaussian"  # exact with a linear forward model and absolute Gaussian noise

    def __init__(
        self,
        n: int = 16,
        channels: int = 1,
        mean: float = 0.0,
        variance: float = 1.0,
        length_scale: float = 0.2,
        nugget: float = 1e-4,
        dtype: str = "float32",
    ) -> None:
        self.n, self.channels = n, channels
        self.label = "a Gaussian random field (synthetic; the exact posterior is known)"
        self.units = "no physical unit"
        self.mean, self.variance, self.length_scale = mean, variance, length_scale
        self.dtype = getattr(torch, dtype)
        p = pixel_centres(n)
        d2 = torch.cdist(p, p).square()
        cov = variance * torch.exp(-d2 / (2 * length_scale**2))
        cov += nugget * variance * torch.eye(n * n, dtype=torch.float64)
        self._cov1 = cov  # one channel, (n^2, n^2)
        # One thread: LAPACK's eigenvectors (signs, round-off) depend on the thread count, and
        # a seed must give the same field on any machine setting.
        with torch_threads(1):
            evals, evecs = torch.linalg.eigh(cov)
        self._sqrt1 = evecs * evals.clamp_min(0).sqrt()  # C = R R^T

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.channels, self.n, self.n)

    def covariance_matrix(self) -> torch.Tensor:
        """Full covariance ``(D, D)`` of the flattened x, float64 (channels independent)."""
        return torch.block_diag(*[self._cov1] * self.channels)

    def mean_vector(self) -> torch.Tensor:
        """Mean ``(D,)`` of the flattened x, float64."""
        return torch.full((self.channels * self.n**2,), float(self.mean), dtype=torch.float64)

    def sample(self, n, generator=None, device=None):
        dev = generator_device(generator, device)
        z = torch.randn(n, self.channels, self.n**2, generator=generator, device=dev,
                        dtype=torch.float64)
        x = self.mean + z @ self._sqrt1.to(dev).T
        return x.reshape(n, *self.shape).to(self.dtype)
