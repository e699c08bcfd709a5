"""Parameter models of the OCE components (pydantic; no torch import).

Units: moduli are shear moduli in kPa, lengths of the geometry in unit-square coordinates
(x to the right, y up; the physical width is ``OCEPhaseParams.domain_um``), the pressure in kPa,
optical lengths in micrometres. docs/oce.md gives the reasoning behind every default.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, field_validator, model_validator

from invdiff.reference.params import Params

Range = tuple[float, float]


def _ordered(v: Range) -> Range:
    if v[0] > v[1]:
        raise ValueError(f"range {v} must be (low, high) with low <= high")
    return v


class TumourSpheroidParams(Params):
    n: int = Field(16, ge=4, le=256, description="grid size (n x n elements)")
    gel_modulus_range: Range = Field((1.0, 4.0), description="hydrogel shear modulus (kPa); "
                                     "equal ends: a known constant")
    layer_modulus: float = Field(1.0, gt=0, description="compliant layer shear modulus (kPa)")
    layer_thickness: float = Field(0.125, ge=0, lt=0.5,
                                   description="compliant layer on top (unit square; 0: none)")
    semi_major_range: Range = Field((0.12, 0.25), description="spheroid semi-major axis a")
    aspect_range: Range = Field((0.6, 1.0), description="b / a (1: circle)")
    orientation_range: Range = Field((0.0, math.pi), description="major axis angle (rad)")
    centre_x_range: Range = (0.3, 0.7)
    centre_y_range: Range = (0.3, 0.55)
    rim_ratio_range: Range = Field((1.5, 4.0), description="rim modulus / gel modulus")
    core_ratio_range: Range = Field((0.3, 1.0), description="necrotic core modulus / gel")
    core_fraction_range: Range = Field((0.3, 0.7), description="core semi-axes / outer ones")
    subsamples: int = Field(8, ge=1, le=64, description="area sub-samples per element side")
    dtype: Literal["float32", "float64"] = "float32"

    @field_validator("gel_modulus_range", "semi_major_range", "aspect_range", "centre_x_range",
                     "centre_y_range", "rim_ratio_range", "core_ratio_range",
                     "core_fraction_range")
    @classmethod
    def _non_negative(cls, v: Range) -> Range:
        if v[0] < 0:
            raise ValueError(f"range {v} must be non-negative")
        return _ordered(v)

    @field_validator("orientation_range")
    @classmethod
    def _angle(cls, v: Range) -> Range:
        return _ordered(v)

    @model_validator(mode="after")
    def _fits(self) -> TumourSpheroidParams:
        if self.aspect_range[1] > 1 or self.core_fraction_range[1] >= 1:
            raise ValueError("aspect_range and core_fraction_range must lie within [0, 1] "
                             "(b <= a; the core sits inside the rim)")
        if min(self.rim_ratio_range[0], self.core_ratio_range[0], self.gel_modulus_range[0],
               self.semi_major_range[0], self.aspect_range[0]) <= 0:
            raise ValueError("gel_modulus_range, rim_ratio_range, core_ratio_range, "
                             "semi_major_range and aspect_range must be positive")
        top = self.centre_y_range[1] + self.semi_major_range[1]
        if top > 1 - self.layer_thickness:
            raise ValueError(
                f"the spheroid may reach y = {top:.3g}, into the compliant layer that starts at "
                f"y = {1 - self.layer_thickness:.3g}; lower centre_y_range or semi_major_range"
            )
        return self


class OCEPhaseParams(Params):
    grid: int = Field(16, ge=2, le=256, description="elements per side (N x N)")
    domain_um: float = Field(1000.0, gt=0, description="physical width and depth (um)")
    loading: Literal["traction", "displacement"] = "traction"
    pressure_kpa: float = Field(0.002, gt=0, description="top pressure (traction loading)")
    compression: float = Field(3e-4, gt=0, description="top displacement / depth "
                               "(displacement loading)")
    refractive_index: float = Field(1.4, gt=0)
    wavelength_um: float = Field(1.3, gt=0, description="OCT centre wavelength lambda_0")
    poisson: float = Field(0.49, ge=0, lt=0.5)
    wrap: bool = Field(True, description="False: the unwrapped phase (for tests)")
    backend: Literal["scipy", "torch"] = "scipy"
    output: Literal["phase", "phasor"] = Field("phase", description="phasor: (cos, sin) "
                                               "channels instead of the wrapped phase")


class OCEPhaseNoiseParams(Params):
    snr0: float = Field(300.0, gt=0, description="mean OCT SNR at the top (linear, not dB)")
    snr_drop_db: float = Field(10.0, ge=0, description="mean SNR loss from top to bottom (dB)")
    speckle: bool = Field(True, description="fully developed speckle intensity map")
    speckle_smoothing: float = Field(1.0, ge=0, description="speckle blur std (pixels)")
    decorrelation: bool = Field(True, description="strain-induced decorrelation")
    window_pixels: float = Field(1.0, gt=0, description="axial averaging window (pixels)")
    snr_floor: float = Field(1e-3, gt=0, description="lower bound of the SNR (numerics)")


class InclusionMetricParams(Params):
    threshold: float = Field(1.25, gt=1, description="modulus ratio to the body's median "
                             "beyond which (either way) a pixel is inclusion")
