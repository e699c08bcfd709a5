"""Linear forward model: Gaussian blur, optional pixel mask, optional subsampling."""

from __future__ import annotations

import torch

from invdiff.checks import as_batch
from invdiff.interfaces import ForwardModel


def blur_matrix_1d(n: int, blur: float) -> torch.Tensor:
    """Row-normalised 1-D Gaussian blur ``(n, n)`` with std ``blur`` pixels (0: identity)."""
    if blur == 0:
        return torch.eye(n, dtype=torch.float64)
    i = torch.arange(n, dtype=torch.float64)
    k = torch.exp(-((i[:, None] - i[None, :]) ** 2) / (2 * blur**2))
    # Truncate the far tail (< 1e-12 of the peak, beyond ~7.4 std): it changes nothing
    # measurable, and float32 denormals from it would slow the matrix product ~40x.
    k = torch.where(k < 1e-12, torch.zeros_like(k), k)
    return k / k.sum(dim=1, keepdim=True)


class LinearBlur(ForwardModel):
    """y_clean = A x, per channel, with A = P M (B (x) B).

    B is the 1-D blur (separable, boundary renormalised), M zeroes the unobserved pixels (a
    random subset of ``1 - mask_fraction`` of them, fixed by ``mask_seed``) and P keeps every
    ``subsample``-th pixel in each direction. y keeps the image layout: masked pixels read 0.
    """

    def __init__(
        self,
        n: int = 16,
        channels: int = 1,
        blur: float = 1.0,
        mask_fraction: float = 1.0,
        mask_seed: int = 0,
        subsample: int = 1,
    ) -> None:
        self.n, self.channels, self.subsample = n, channels, subsample
        self.label = "blurred x" + (", unobserved pixels read 0" if mask_fraction < 1 else "")
        self.units = "units of x"
        b = blur_matrix_1d(n, blur)
        a = torch.kron(b, b)  # row-major flatten: pixel (i, j) -> i * n + j
        g = torch.Generator().manual_seed(mask_seed)
        observed = torch.rand(n * n, generator=g) < mask_fraction
        if mask_fraction >= 1.0:
            observed[:] = True
        self.mask = observed.reshape(n, n)
        a = a * observed[:, None].to(a.dtype)
        keep = torch.zeros(n, n, dtype=torch.bool)
        keep[::subsample, ::subsample] = True
        self._a1 = a[keep.flatten()]  # (P1, n^2) float64
        self._cache: dict[tuple, torch.Tensor] = {}

    @property
    def x_shape(self) -> tuple[int, ...]:
        return (self.channels, self.n, self.n)

    def output_shape(self, x_shape=None):
        m = -(-self.n // self.subsample)
        return (self.channels, m, m)

    def matrix(self) -> torch.Tensor:
        """The full operator ``(P, D)`` on flattened x, float64."""
        return torch.block_diag(*[self._a1] * self.channels)

    def __call__(self, x):
        x = as_batch(x, self.x_shape, "x")
        key = (x.device, x.dtype)
        if key not in self._cache:
            self._cache[key] = self._a1.to(device=x.device, dtype=x.dtype)
        a = self._cache[key]
        y = x.flatten(2) @ a.T  # (B, C, P1)
        return y.reshape(x.shape[0], *self.output_shape())
