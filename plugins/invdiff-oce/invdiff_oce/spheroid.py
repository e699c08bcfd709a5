"""The tumour-spheroid prior: shear modulus (kPa) of a spheroid's cross-section in a hydrogel.

Geometry in unit-square coordinates (x right, y up; array row 0 = top, as in the elasticity
plugin). A sample is

* the hydrogel, modulus ``gel`` ~ U(gel_modulus_range) (kPa; equal ends make it a known
  constant; by default it varies, see docs/oce.md: the calibrated compliant layer, not the gel,
  fixes the absolute scale, and a varying gel makes the phase wrap in some samples only);
* an elliptical spheroid: centre (cx, cy), semi-axes a (major) and b = aspect * a, major axis at
  angle theta from the x axis; its proliferating rim has modulus rim_ratio * gel, and a
  concentric, similar necrotic core (semi-axes core_fraction * (a, b)) has core_ratio * gel;
* a compliant layer of known modulus ``layer_modulus`` over the top ``layer_thickness``.

Each of the 9 parameters is uniform on its range (independent). Element values are
area averages, mu_e = sum_k |e cap material k| / |e| mu_k, estimated with ``subsamples^2``
midpoint points per element.
"""

from __future__ import annotations

import math

import torch

from invdiff.checks import generator_device
from invdiff.errors import DataError
from invdiff.evaluation.mcmc import uniform_box
from invdiff.interfaces import Prior

Range = tuple[float, float]

#: Columns of the parameter table returned by ``sample_with_params``.
NAMES = ("cx", "cy", "a", "aspect", "theta", "rim_ratio", "core_ratio", "core_fraction",
         "gel")


def ellipse_radius2(px: torch.Tensor, py: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Squared elliptic radius ((u / a)^2 + (v / b)^2) of points (px, py) for ellipses
    ``p (B, 9)`` (columns :data:`NAMES`), with (u, v) the point in the ellipse's axes:
    ``(B, *points)``; 1 on the outer boundary, core_fraction^2 on the core's."""
    cx, cy, a, aspect, theta = (p[:, i].view(-1, 1, 1) for i in range(5))
    dx, dy = px - cx, py - cy
    cos, sin = torch.cos(theta), torch.sin(theta)
    u = (dx * cos + dy * sin) / a
    v = (-dx * sin + dy * cos) / (a * aspect)
    return u**2 + v**2


def paint_spheroids(params: torch.Tensor, n: int, layer: float, layer_thickness: float,
                    subsamples: int = 8, chunk: int = 64) -> torch.Tensor:
    """Area-averaged shear modulus fields (B, n, n) for ``params (B, 9)``, on params' device.

    Painter's order: gel, rim (inside the outer ellipse), core (inside the inner one), layer.
    """
    m = n * subsamples
    s = (torch.arange(m, dtype=params.dtype, device=params.device) + 0.5) / m
    px, py = s.view(1, 1, m), (1.0 - s).view(1, m, 1)  # sub-point row a has y = 1 - s_a
    in_layer = py >= 1.0 - layer_thickness
    out = []
    for p in params.split(chunk):
        r2 = ellipse_radius2(px, py, p)
        rim, core, frac, gel = (p[:, i].view(-1, 1, 1) for i in (5, 6, 7, 8))
        val = torch.where(r2 <= 1.0, gel * rim, gel.expand_as(r2))
        val = torch.where(r2 <= frac**2, gel * core, val)
        val = torch.where(in_layer, torch.full_like(val, layer), val)
        out.append(val.view(-1, n, subsamples, n, subsamples).mean(dim=(2, 4)))
    return torch.cat(out)


class TumourSpheroidPrior(Prior):
    """Shear modulus fields x (1, n, n) in kPa of a tumour spheroid in a hydrogel.

    ``sample_with_params(n) -> (x (n, 1, N, N), params (n, 9))`` with the columns of
    :data:`NAMES`; ``field_from_params(params) -> x``; ``inclusion_mask(params)`` gives the
    area fraction of the spheroid in each element (for geometry metrics). A range with equal
    ends fixes that parameter. Defaults and their physiological reasoning: docs/oce.md.
    """

    names = NAMES
    reference = "spheroid-mcmc"  # the reference posterior that fits this prior

    def __init__(
        self,
        n: int = 16,
        gel_modulus_range: Range = (1.0, 4.0),
        layer_modulus: float = 1.0,
        layer_thickness: float = 0.125,
        semi_major_range: Range = (0.12, 0.25),
        aspect_range: Range = (0.6, 1.0),
        orientation_range: Range = (0.0, math.pi),
        centre_x_range: Range = (0.3, 0.7),
        centre_y_range: Range = (0.3, 0.55),
        rim_ratio_range: Range = (1.5, 4.0),
        core_ratio_range: Range = (0.3, 1.0),
        core_fraction_range: Range = (0.3, 0.7),
        subsamples: int = 8,
        dtype: str = "float32",
    ) -> None:
        self.n, self.subsamples = int(n), int(subsamples)
        self.layer_modulus = float(layer_modulus)
        self.label, self.units = "shear modulus", "kPa"  # read by figures and metrics.json
        self.layer_thickness = float(layer_thickness)
        self.ranges = [tuple(centre_x_range), tuple(centre_y_range), tuple(semi_major_range),
                       tuple(aspect_range), tuple(orientation_range), tuple(rim_ratio_range),
                       tuple(core_ratio_range), tuple(core_fraction_range),
                       tuple(gel_modulus_range)]
        self.dtype = getattr(torch, dtype)

    @property
    def shape(self) -> tuple[int, ...]:
        return (1, self.n, self.n)

    @property
    def bounds(self) -> torch.Tensor:
        """(9, 2) float64: [low, high] of each parameter in :data:`NAMES` order."""
        return torch.tensor(self.ranges, dtype=torch.float64)

    def sample(self, n, generator=None, device=None):
        return self.sample_with_params(n, generator, device)[0]

    def sample_with_params(self, n: int, generator: torch.Generator | None = None,
                           device: torch.device | str | None = None
                           ) -> tuple[torch.Tensor, torch.Tensor]:
        dev = generator_device(generator, device)
        b = self.bounds
        params = uniform_box(n, b[:, 0].tolist(), b[:, 1].tolist(), generator, dev)
        return self.field_from_params(params), params

    def _params(self, params: torch.Tensor) -> torch.Tensor:
        p = torch.as_tensor(params)
        if p.dim() == 1:
            p = p.unsqueeze(0)
        if p.dim() != 2 or p.shape[1] != len(NAMES):
            raise DataError(f"params has shape {tuple(p.shape)}; expected (B, {len(NAMES)}) or "
                            f"({len(NAMES)},) with columns {NAMES}")
        if bool((p[:, [2, 3, 8]] <= 0).any()):
            raise DataError("params columns 'a', 'aspect' (semi-axes) and 'gel' (modulus) must "
                            "be positive")
        return p.to(torch.float64)

    def field_from_params(self, params: torch.Tensor, dtype: torch.dtype | None = None
                          ) -> torch.Tensor:
        """x (B, 1, N, N) in kPa for params (B, 9) or (9,) (columns :data:`NAMES`)."""
        mu = paint_spheroids(self._params(params), self.n, self.layer_modulus,
                             self.layer_thickness, self.subsamples)
        return mu.unsqueeze(1).to(dtype or self.dtype)

    def inclusion_mask(self, params: torch.Tensor) -> torch.Tensor:
        """Area fraction (B, 1, N, N) of each element inside the spheroid (rim or core)."""
        p = self._params(params).clone()
        p[:, 5:9] = p.new_tensor([2.0, 2.0, 0.0, 1.0])  # gel 1, spheroid 2, no core or layer
        return (paint_spheroids(p, self.n, 0.0, 0.0, self.subsamples) - 1.0).unsqueeze(1)

    def __repr__(self) -> str:
        return (f"TumourSpheroidPrior(n={self.n}, gel_modulus_range={self.ranges[8]}, "
                f"layer_modulus={self.layer_modulus}, layer_thickness={self.layer_thickness})")
