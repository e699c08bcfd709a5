"""Log-normal shear modulus: mu = exp(g), g a Gaussian random field on the N x N pixel centres.

g has mean ``log_mean`` and covariance C = s^2 (k(x_i, x_j) + nugget delta_ij) with the
squared-exponential kernel k = exp(-|p_i - p_j|^2 / (2 l^2)), exactly the covariance of
:class:`invdiff.reference.prior.GaussianFieldPrior`. The kernel is separable on the grid,
k = k_x(cols) k_y(rows), so C = s^2 (K_1 kron K_1 + nugget I) with the 1-D kernel matrix K_1 = Q L
Q^T, and g = Q (sqrt(L L^T + nugget) * W) Q^T with W iid N(0, 1) (n, n) samples it exactly in
O(n^3) instead of the O(n^6) eigendecomposition of the full C (N = 128 is then instant).
"""

from __future__ import annotations

import torch

from invdiff.checks import generator_device
from invdiff.interfaces import Prior
from invdiff.runtime import torch_threads


class LognormalFieldPrior(Prior):
    """mu = exp(g), g ~ GRF(log_mean, log_std^2, squared-exponential, ``length_scale``)."""

    label = "shear modulus mu"  # read by figures and metrics.json
    units = "relative units (median exp(log_mean))"

    def __init__(
        self,
        n: int = 32,
        log_mean: float = 0.0,
        log_std: float = 0.5,
        length_scale: float = 0.2,
        nugget: float = 1e-4,
        dtype: str = "float32",
    ) -> None:
        self.n, self.log_mean, self.log_std = n, log_mean, log_std
        self.length_scale, self.nugget = length_scale, nugget
        self.dtype = getattr(torch, dtype)
        c = (torch.arange(n, dtype=torch.float64) + 0.5) / n
        k1 = torch.exp(-(c[:, None] - c[None, :]).square() / (2 * length_scale**2))
        with torch_threads(1):  # eigenvectors must not depend on the thread count
            lam, self._q = torch.linalg.eigh(k1)
        lam = lam.clamp_min(0)
        self._scale = log_std * (lam[:, None] * lam[None, :] + nugget).sqrt()  # (n, n)

    @property
    def shape(self) -> tuple[int, ...]:
        return (1, self.n, self.n)

    def covariance_matrix(self) -> torch.Tensor:
        """Covariance (n^2, n^2) of the row-major flattened g, float64 (for tests)."""
        q = torch.kron(self._q, self._q)
        return q @ torch.diag(self._scale.flatten().square()) @ q.T

    def sample_log(self, n: int, generator=None, device=None) -> torch.Tensor:
        """g (n, 1, N, N) float64 on ``device`` (default: the generator's)."""
        dev = generator_device(generator, device)
        gen_dev = generator.device if generator is not None else torch.device("cpu")
        w = torch.randn(n, self.n, self.n, generator=generator, dtype=torch.float64,
                        device=gen_dev).to(dev)
        q = self._q.to(dev)
        g = self.log_mean + q @ (self._scale.to(dev) * w) @ q.T
        return g.unsqueeze(1)

    def sample(self, n, generator=None, device=None):
        return self.sample_log(n, generator, device).exp().to(self.dtype)
