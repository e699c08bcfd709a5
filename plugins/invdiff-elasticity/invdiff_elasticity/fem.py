"""The elasticity forward model: shear modulus field mu -> displacement -> measurement.

Physics (DESIGN.md, canonical): unit square, N x N bilinear quadrilaterals with 2 x 2 Gauss
points, element-wise constant mu, incompressible plane stress sigma = 2 mu (eps + tr(eps) I),
i.e. D = mu [[4, 2, 0], [2, 4, 0], [0, 0, 1]] with engineering shear strain. Bottom edge
u_y = 0, bottom-left node u_x = 0, top edge u_y = -compression (u_x free), sides traction free.
Options (see docs/elasticity.md): uniform pressure on top instead (``loading="traction"``) and
plane strain with Poisson ratio ``poisson`` and selective reduced integration
(``model="plane_strain"``). Arrays: row 0 = top edge, column 0 = left edge, in mu and in u.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from invdiff.checks import as_batch, check_finite
from invdiff.errors import ConfigError, DataError
from invdiff.interfaces import ForwardModel
from invdiff_elasticity.assembly import LinearSystem, build_system
from invdiff_elasticity.solvers import solve_scipy, solve_torch

MEASUREMENTS = ("uy_centres", "both_centres", "nodal")
LOADINGS = ("displacement", "traction")
MODELS = ("plane_stress_incompressible", "plane_strain")
BACKENDS = ("scipy", "torch")


def _choice(value: str, allowed: tuple[str, ...], name: str) -> str:
    if value not in allowed:
        raise ConfigError(f"{name}={value!r} is not supported; choose one of {allowed}")
    return value


def element_centres(u: torch.Tensor) -> torch.Tensor:
    """Mean of each element's four nodal values: (..., N+1, N+1) -> (..., N, N)."""
    return (u[..., :-1, :-1] + u[..., :-1, 1:] + u[..., 1:, :-1] + u[..., 1:, 1:]) / 4


class ElasticityFEM(ForwardModel):
    """Bilinear-quad FEM of a heterogeneous elastic square under compression.

    ``displacement(mu)`` returns the nodal displacement ``(B, 2, N+1, N+1)`` (component 0 = u_x,
    1 = u_y, positive up) for ``mu`` of shape ``(N, N)``, ``(B, N, N)`` or ``(B, 1, N, N)``.
    As a forward model, ``fem(x (B, 1, N, N)) -> y (B, *y_shape)`` with ``measurement``:
    ``"uy_centres"`` (1, N, N) u_y at element centres (mean of the 4 nodes), aligned with x;
    ``"both_centres"`` (2, N, N) u_x and u_y there; ``"nodal"`` (2, N+1, N+1).

    ``pressure`` (traction loading) defaults to 3 * compression: the top stress a uniform
    mu = 1 sample has under the displacement loading, so both loadings then agree for mu = 1.
    ``backend="scipy"`` (banded Cholesky on the CPU, the fast default) or ``"torch"`` (batched
    dense Cholesky on the input's device, e.g. CUDA; memory 8 ndof^2 bytes per field).
    """

    def __init__(
        self,
        grid: int = 32,
        compression: float = 0.01,
        measurement: str = "uy_centres",
        loading: str = "displacement",
        pressure: float | None = None,
        model: str = "plane_stress_incompressible",
        poisson: float = 0.49,
        backend: str = "scipy",
    ) -> None:
        if int(grid) < 1:
            raise ConfigError(f"grid={grid} must be a positive number of elements per side")
        if not 0.0 <= poisson < 0.5:
            raise ConfigError(f"poisson={poisson} must lie in [0, 0.5) (0.5 is incompressible: "
                              f"use model='plane_stress_incompressible' or 0.499)")
        self.grid = int(grid)
        self.compression = float(compression)
        self.measurement = _choice(measurement, MEASUREMENTS, "measurement")
        self.loading = _choice(loading, LOADINGS, "loading")
        self.model = _choice(model, MODELS, "model")
        self.backend = _choice(backend, BACKENDS, "backend")
        self.poisson = float(poisson)
        self.pressure = 3.0 * self.compression if pressure is None else float(pressure)
        # read by figures and metrics.json: what y is, physically
        self.label = {
            "uy_centres": "axial displacement u_y at element centres (mostly the uniform "
                          "compression; the inclusion changes it little)",
            "both_centres": "displacement (u_x, u_y) at element centres",
            "nodal": "nodal displacement (u_x, u_y)"}[self.measurement]
        self.units = "fraction of the side length"

    @property
    def system(self) -> LinearSystem:
        """The precomputed operators of this grid/model/loading (cached across instances)."""
        return build_system(self.grid, self.model, self.poisson, self.loading,
                            self.compression, self.pressure)

    # -- inputs -------------------------------------------------------------------------------
    def _moduli(self, mu: Any) -> torch.Tensor:
        """mu as a float64 tensor (B, N^2), validated: right shape, finite, positive."""
        if isinstance(mu, np.ndarray):
            mu = torch.from_numpy(mu)
        if not isinstance(mu, torch.Tensor):
            raise DataError(f"mu must be a torch.Tensor or numpy array, got {type(mu).__name__}")
        n = self.grid
        if mu.dim() == 4 and mu.shape[1] == 1:
            mu = mu[:, 0]
        mu = as_batch(mu, (n, n), f"mu (shear modulus on the {n} x {n} grid)")
        check_finite(mu, "mu (shear modulus)")
        if bool((mu <= 0).any()):
            raise DataError(
                f"mu (shear modulus) must be positive everywhere; found {int((mu <= 0).sum())} "
                f"values <= 0 (min {float(mu.min()):.3g}). Map fields through exp() or clamp "
                f"them to a positive floor first."
            )
        return mu.reshape(mu.shape[0], n * n).to(torch.float64)

    # -- physics ------------------------------------------------------------------------------
    def solve(self, mu: Any) -> torch.Tensor:
        """Full dof vector u (B, ndof) in float64 on mu's device (see :mod:`assembly`)."""
        m = self._moduli(mu)
        if self.backend == "torch":
            return solve_torch(self.system, m)
        u = solve_scipy(self.system, m.cpu().numpy())
        return torch.from_numpy(u).to(m.device)

    def displacement(self, mu: Any, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """Nodal displacement (B, 2, N+1, N+1): [u_x, u_y], row 0 = top, column 0 = left."""
        u = self.solve(mu)
        n1 = self.grid + 1
        return u.reshape(-1, n1, n1, 2).permute(0, 3, 1, 2).contiguous().to(dtype)

    def measure(self, u: torch.Tensor) -> torch.Tensor:
        """The measurement of nodal displacements u (B, 2, N+1, N+1)."""
        if self.measurement == "nodal":
            return u
        centres = element_centres(u)
        return centres[:, 1:2] if self.measurement == "uy_centres" else centres

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = as_batch(x, (1, self.grid, self.grid), "x (shear modulus field)")
        return self.measure(self.displacement(x)).to(x.dtype)

    def output_shape(self, x_shape: tuple[int, ...]) -> tuple[int, ...]:
        if tuple(x_shape) != (1, self.grid, self.grid):
            raise DataError(f"x_shape {tuple(x_shape)} does not fit this FEM; expected "
                            f"(1, {self.grid}, {self.grid})")
        n = self.grid
        return {"uy_centres": (1, n, n), "both_centres": (2, n, n),
                "nodal": (2, n + 1, n + 1)}[self.measurement]

    def stiffness(self, mu: Any):
        """Global stiffness K(mu) (ndof, ndof) as a scipy CSR matrix, one field, no BCs."""
        m = self._moduli(mu)
        if m.shape[0] != 1:
            raise DataError(f"stiffness takes one field, got a batch of {m.shape[0]}")
        return self.system.stiffness(m[0].cpu().numpy())

    def reaction_force(self, mu: Any) -> torch.Tensor:
        """Total vertical force on the top edge, sum over top nodes of (K u)_y: (B,) float64.

        It equals the integral of sigma_yy along the top edge (-3 mu c for a uniform mu under
        displacement loading; -pressure under traction loading).
        """
        u = self.solve(mu).cpu().numpy()
        m = self._moduli(mu).cpu().numpy()
        top = self.system.grid.top_uy()
        forces = [(self.system.stiffness(mi) @ ui)[top].sum() for mi, ui in zip(m, u, strict=True)]
        return torch.tensor(forces, dtype=torch.float64)

    def __repr__(self) -> str:
        return (f"ElasticityFEM(grid={self.grid}, compression={self.compression}, "
                f"measurement={self.measurement!r}, loading={self.loading!r}, "
                f"model={self.model!r}, backend={self.backend!r})")
