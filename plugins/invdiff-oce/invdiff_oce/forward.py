"""The OCE forward model: shear modulus -> plane-strain FEM -> OCT phase difference (wrapped).

Mechanics: :class:`invdiff_elasticity.ElasticityFEM` with ``model="plane_strain"``, Poisson
ratio 0.49 and selective reduced integration, on the unit square scaled to ``domain_um``; the
top is compressed by a uniform pressure (``loading="traction"``, default) or a prescribed
displacement, the bottom rests on a rigid slide (u_y = 0). Linear elasticity is scale-free, so
the unit-square displacement u times ``domain_um`` is the displacement in micrometres, and a
pressure in kPa on moduli in kPa gives the right strains.

Optics: the beam enters from the top, so the axial displacement along it is u_z = -u_y (depth z
points down), and the phase difference between the B-scans after and before compression is

    dphi = 4 pi n u_z / lambda_0          (round trip: factor 2; phase 2 pi n / lambda_0 per um)

taken at element centres (the mean of the element's four nodes), then wrapped to (-pi, pi].
Output ``(B, 1, N, N)``, aligned with x; ``output="phasor"`` gives ``(B, 2, N, N)`` =
(cos dphi, sin dphi) instead, the same information without the 2 pi jumps of the wrapped phase
(an easier input for a convolutional network; the noise model and the estimators accept both).
"""

from __future__ import annotations

import math

import torch
from invdiff_elasticity import ElasticityFEM

from invdiff.checks import as_batch
from invdiff.errors import ConfigError, DataError
from invdiff.interfaces import ForwardModel
from invdiff_oce.phase import to_phasor, wrap


class OCEPhaseForward(ForwardModel):
    """``y = wrap(4 pi n u_z / lambda_0)`` at element centres for x = shear modulus (kPa).

    Args: grid N; ``domain_um`` the physical width and depth; ``loading`` "traction" (uniform
    pressure ``pressure_kpa``) or "displacement" (top moved down by ``compression`` x depth);
    ``refractive_index`` n and ``wavelength_um`` lambda_0; ``poisson``; ``wrap=False`` returns
    the unwrapped phase; ``backend`` of the FEM ("scipy" CPU, "torch" on x's device);
    ``output`` "phase" (1 channel) or "phasor" (2 channels: cos, sin).
    """

    def __init__(
        self,
        grid: int = 16,
        domain_um: float = 1000.0,
        loading: str = "traction",
        pressure_kpa: float = 0.002,
        compression: float = 3e-4,
        refractive_index: float = 1.4,
        wavelength_um: float = 1.3,
        poisson: float = 0.49,
        wrap: bool = True,
        backend: str = "scipy",
        output: str = "phase",
    ) -> None:
        for name, value in (("domain_um", domain_um), ("pressure_kpa", pressure_kpa),
                            ("compression", compression), ("refractive_index", refractive_index),
                            ("wavelength_um", wavelength_um)):
            if not value > 0:
                raise ConfigError(f"{name}={value} must be positive")
        self.grid, self.domain_um = int(grid), float(domain_um)
        self.refractive_index, self.wavelength_um = float(refractive_index), float(wavelength_um)
        if output not in ("phase", "phasor"):
            raise ConfigError(f"output={output!r} must be 'phase' or 'phasor'")
        self.wrap, self.output = bool(wrap), output
        self.channels = 2 if output == "phasor" else 1
        # read by figures and metrics.json: what y is, physically
        self.label = ("OCT phase difference (cos, sin)" if output == "phasor" else
                      "OCT phase difference" + (", wrapped to (-pi, pi]" if wrap else ""))
        self.units = "dimensionless" if output == "phasor" else "rad"
        self.fem = ElasticityFEM(grid=grid, compression=compression, measurement="uy_centres",
                                 loading=loading, pressure=pressure_kpa, model="plane_strain",
                                 poisson=poisson, backend=backend)

    @property
    def phase_per_um(self) -> float:
        """K = 4 pi n / lambda_0: phase difference (rad) per micrometre of axial displacement."""
        return 4 * math.pi * self.refractive_index / self.wavelength_um

    @property
    def pixel_um(self) -> float:
        """Element size (um) along depth and width."""
        return self.domain_um / self.grid

    def axial_displacement_um(self, x: torch.Tensor) -> torch.Tensor:
        """u_z = -u_y (um, positive = down, along the beam) at element centres: (B, 1, N, N),
        float64, on x's device."""
        x = self._check(x)
        return -self.fem.measure(self.fem.displacement(x)) * self.domain_um

    def unwrapped_phase(self, x: torch.Tensor) -> torch.Tensor:
        """4 pi n u_z / lambda_0 (rad), float64, (B, 1, N, N)."""
        return self.phase_per_um * self.axial_displacement_um(x)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        phase = self.unwrapped_phase(x)
        if self.output == "phasor":
            return to_phasor(phase).to(x.dtype)
        return (wrap(phase) if self.wrap else phase).to(x.dtype)

    def output_shape(self, x_shape: tuple[int, ...]) -> tuple[int, ...]:
        if tuple(x_shape) != (1, self.grid, self.grid):
            raise DataError(f"x_shape {tuple(x_shape)} does not fit this forward model; expected "
                            f"(1, {self.grid}, {self.grid})")
        return (self.channels, self.grid, self.grid)

    def _check(self, x: torch.Tensor) -> torch.Tensor:
        # a black box: the FEM runs outside autograd, so an x that requires grad is detached
        # (the output carries no graph) instead of failing inside numpy
        return as_batch(x, (1, self.grid, self.grid), "x (shear modulus field in kPa)").detach()

    def __repr__(self) -> str:
        return (f"OCEPhaseForward(grid={self.grid}, domain_um={self.domain_um}, "
                f"loading={self.fem.loading!r}, pressure_kpa={self.fem.pressure}, "
                f"n={self.refractive_index}, wavelength_um={self.wavelength_um}, "
                f"wrap={self.wrap}, output={self.output!r})")
