"""Parameter models of the elasticity components (pydantic; no torch import)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field

from invdiff.params import Params


def _ordered(v: tuple[float, float], positive: bool) -> tuple[float, float]:
    if v[0] > v[1]:
        raise ValueError(f"range {v} must be (low, high) with low <= high")
    if v[0] < 0 or (positive and v[0] == 0):
        raise ValueError(f"range {v} must be {'positive' if positive else 'non-negative'}")
    return v


#: (low, high) with 0 <= low <= high (geometry), or 0 < low <= high (contrasts)
Range = Annotated[tuple[float, float], AfterValidator(lambda v: _ordered(v, False))]
PositiveRange = Annotated[tuple[float, float], AfterValidator(lambda v: _ordered(v, True))]


class ElasticityFEMParams(Params):
    grid: int = Field(32, ge=1, le=512, description="elements per side (N x N quads)")
    compression: float = Field(0.01, description="top displacement (downwards) when loading "
                               "is 'displacement'")
    measurement: Literal["uy_centres", "both_centres", "nodal"] = "uy_centres"
    loading: Literal["displacement", "traction"] = "displacement"
    pressure: float | None = Field(None, description="top pressure for 'traction' loading "
                                   "(default 3 * compression)")
    model: Literal["plane_stress_incompressible", "plane_strain"] = "plane_stress_incompressible"
    poisson: float = Field(0.49, ge=0, lt=0.5, description="Poisson ratio ('plane_strain')")
    backend: Literal["scipy", "torch"] = "scipy"


class _InclusionParams(Params):
    n: int = Field(32, ge=2, le=512, description="grid size (n x n elements)")
    centre_range: Range = (0.2, 0.8)
    radius_range: Range = (0.1, 0.2)
    background: float = Field(1.0, gt=0)
    subsamples: int = Field(8, ge=1, le=64, description="area sub-samples per element side")
    dtype: Literal["float32", "float64"] = "float32"


class CircularInclusionParams(_InclusionParams):
    contrast_range: PositiveRange = Field((2.0, 5.0), description="inclusion / background "
                                          "modulus")


class MultiInclusionParams(_InclusionParams):
    min_inclusions: int = Field(1, ge=1)
    max_inclusions: int = Field(3, ge=1, le=16)
    stiff_contrast_range: PositiveRange = (2.0, 5.0)
    soft_contrast_range: PositiveRange = (0.2, 0.5)
    p_stiff: float = Field(0.5, ge=0, le=1, description="probability that a disc is stiff")


class LognormalFieldParams(Params):
    n: int = Field(32, ge=2, le=512, description="grid size (n x n elements)")
    log_mean: float = 0.0
    log_std: float = Field(0.5, gt=0, description="std of log(mu)")
    length_scale: float = Field(0.2, gt=0, description="in units of the unit square")
    nugget: float = Field(1e-4, ge=0, description="added to the correlation's diagonal")
    dtype: Literal["float32", "float64"] = "float32"
