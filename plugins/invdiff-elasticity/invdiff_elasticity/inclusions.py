"""Inclusion priors: discs of different stiffness in a unit background, on an N x N grid.

Geometry lives in unit-square coordinates (x to the right, y up); array row 0 is the top, so the
centre of element (row, col) is (x, y) = ((col + 1/2) / N, 1 - (row + 1/2) / N). An element's
value is the area average of the material over it, mu_e = sum_k |e cap material k| / |e| * mu_k,
estimated with ``subsamples`` x ``subsamples`` midpoint points per element (the area error is
O(r / (N s)^2)-ish on the boundary elements only).
"""

from __future__ import annotations

import torch

from invdiff.checks import generator_device
from invdiff.errors import DataError
from invdiff.evaluation.mcmc import uniform_box
from invdiff.interfaces import Prior

Range = tuple[float, float]


def paint_inclusions(params: torch.Tensor, n: int, subsamples: int = 8,
                     background: float = 1.0, chunk: int = 64) -> torch.Tensor:
    """Area-averaged fields (B, n, n) from discs ``params (B, K, 4)`` = [cx, cy, r, contrast].

    Where discs overlap, the later one wins (painter's order), so values stay within the range
    of the contrasts; a disc with contrast 1 (or r = 0) is invisible (used as padding).
    Computed on params' device and dtype, ``chunk`` fields at a time to bound memory.
    """
    m = n * subsamples
    s = (torch.arange(m, dtype=params.dtype, device=params.device) + 0.5) / m
    px, py = s.view(1, 1, m), (1.0 - s).view(1, m, 1)  # sub-points: row a has y = 1 - s_a
    out = []
    for p in params.split(chunk):
        val = torch.full((p.shape[0], m, m), background, dtype=p.dtype, device=p.device)
        for k in range(p.shape[1]):
            cx, cy, r, c = (p[:, k, i].view(-1, 1, 1) for i in range(4))
            inside = (px - cx) ** 2 + (py - cy) ** 2 <= r**2
            val = torch.where(inside, background * c, val)
        out.append(val.view(-1, n, subsamples, n, subsamples).mean(dim=(2, 4)))
    return torch.cat(out)


class _InclusionPrior(Prior):
    """Shared machinery: subclasses draw parameters (n, K, 4); fields are painted from them."""

    label = "shear modulus mu"  # read by figures and metrics.json

    def __init__(self, n: int, background: float, subsamples: int, dtype: str) -> None:
        self.n, self.background, self.subsamples = n, background, subsamples
        self.dtype = getattr(torch, dtype)

    @property
    def units(self) -> str:
        if self.background == 1.0:
            return "relative to the background"
        return f"units of the background modulus (= {self.background:g})"

    @property
    def shape(self) -> tuple[int, ...]:
        return (1, self.n, self.n)

    def fields(self, discs: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
        mu = paint_inclusions(discs.to(torch.float64), self.n, self.subsamples, self.background)
        return mu.unsqueeze(1).to(dtype or self.dtype)

    def sample(self, n, generator=None, device=None):
        return self.sample_with_params(n, generator, device)[0]


class CircularInclusionPrior(_InclusionPrior):
    """One disc in a background ``background``: centre (cx, cy) ~ U(centre_range^2), radius
    r ~ U(radius_range), contrast (inclusion / background) ~ U(contrast_range), independent.

    ``sample_with_params(n) -> (x (n, 1, N, N), params (n, 4) = [cx, cy, r, contrast])`` and
    ``field_from_params(params) -> x`` expose the 4 parameters (the MCMC reference posterior
    works on them). A range with equal ends fixes that parameter.
    """

    names = ("cx", "cy", "r", "contrast")
    reference = "inclusion-mcmc"  # the reference posterior that fits this prior

    def __init__(
        self,
        n: int = 32,
        centre_range: Range = (0.2, 0.8),
        radius_range: Range = (0.1, 0.2),
        contrast_range: Range = (2.0, 5.0),
        background: float = 1.0,
        subsamples: int = 8,
        dtype: str = "float32",
    ) -> None:
        super().__init__(n, background, subsamples, dtype)
        self.ranges = [tuple(centre_range), tuple(centre_range), tuple(radius_range),
                       tuple(contrast_range)]

    @property
    def bounds(self) -> torch.Tensor:
        """(4, 2) float64: [low, high] of cx, cy, r, contrast."""
        return torch.tensor(self.ranges, dtype=torch.float64)

    def sample_with_params(self, n: int, generator=None, device=None
                           ) -> tuple[torch.Tensor, torch.Tensor]:
        dev = generator_device(generator, device)
        b = self.bounds
        params = uniform_box(n, b[:, 0].tolist(), b[:, 1].tolist(), generator, dev)
        return self.field_from_params(params), params

    def field_from_params(self, params: torch.Tensor, dtype: torch.dtype | None = None
                          ) -> torch.Tensor:
        """x (B, 1, N, N) for params (B, 4) or (4,) = [cx, cy, r, contrast]."""
        p = torch.as_tensor(params)
        if p.dim() == 1:
            p = p.unsqueeze(0)
        if p.dim() != 2 or p.shape[1] != 4:
            raise DataError(f"params has shape {tuple(p.shape)}; expected (B, 4) or (4,) = "
                            f"[cx, cy, r, contrast]")
        return self.fields(p.unsqueeze(1), dtype)


class MultiInclusionPrior(_InclusionPrior):
    """K ~ U{min_inclusions..max_inclusions} discs, each stiff with probability ``p_stiff``
    (contrast ~ U(stiff_contrast_range)) or soft (contrast ~ U(soft_contrast_range)); centres and
    radii as in :class:`CircularInclusionPrior`; later discs overwrite earlier ones.

    ``sample_with_params`` returns params (n, max_inclusions, 4); absent discs have r = 0 and
    contrast 1, so ``field_from_params`` needs no count.
    """

    def __init__(
        self,
        n: int = 32,
        min_inclusions: int = 1,
        max_inclusions: int = 3,
        centre_range: Range = (0.2, 0.8),
        radius_range: Range = (0.1, 0.2),
        stiff_contrast_range: Range = (2.0, 5.0),
        soft_contrast_range: Range = (0.2, 0.5),
        p_stiff: float = 0.5,
        background: float = 1.0,
        subsamples: int = 8,
        dtype: str = "float32",
    ) -> None:
        super().__init__(n, background, subsamples, dtype)
        if not 1 <= min_inclusions <= max_inclusions:
            raise DataError(f"need 1 <= min_inclusions ({min_inclusions}) <= max_inclusions "
                            f"({max_inclusions})")
        self.k_min, self.k_max, self.p_stiff = min_inclusions, max_inclusions, p_stiff
        self.geometry = [tuple(centre_range), tuple(centre_range), tuple(radius_range)]
        self.stiff, self.soft = tuple(stiff_contrast_range), tuple(soft_contrast_range)

    def sample_with_params(self, n: int, generator=None, device=None
                           ) -> tuple[torch.Tensor, torch.Tensor]:
        dev = generator_device(generator, device)
        k = self.k_max
        lows = [r[0] for r in self.geometry] + [self.stiff[0], self.soft[0], 0.0, 0.0]
        highs = [r[1] for r in self.geometry] + [self.stiff[1], self.soft[1], 1.0, 1.0]
        # one box draw per disc: geometry, both contrasts, a stiff/soft coin, a count variate
        u = uniform_box(n * k, lows, highs, generator, dev).view(n, k, 7)
        contrast = torch.where(u[..., 5] < self.p_stiff, u[..., 3], u[..., 4])
        count = self.k_min + (u[:, 0, 6] * (k - self.k_min + 1)).long().clamp_max(k - self.k_min)
        present = torch.arange(k, device=dev).view(1, k) < count.view(n, 1)
        params = torch.cat([u[..., :2], (u[..., 2] * present).unsqueeze(-1),
                            torch.where(present, contrast, 1.0).unsqueeze(-1)], dim=-1)
        return self.field_from_params(params), params

    def field_from_params(self, params: torch.Tensor, dtype: torch.dtype | None = None
                          ) -> torch.Tensor:
        """x (B, 1, N, N) for params (B, K, 4) of discs [cx, cy, r, contrast]."""
        p = torch.as_tensor(params)
        if p.dim() != 3 or p.shape[2] != 4:
            raise DataError(f"params has shape {tuple(p.shape)}; expected (B, K, 4)")
        return self.fields(p, dtype)
