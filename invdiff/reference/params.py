"""Parameter models of the reference components (pydantic; no torch import)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from invdiff.params import Params  # noqa: F401 - re-exported for plugins


class GaussianFieldParams(Params):
    n: int = Field(16, ge=2, le=128, description="grid size (n x n pixels)")
    channels: int = Field(1, ge=1, description="independent channels")
    mean: float = 0.0
    variance: float = Field(1.0, gt=0)
    length_scale: float = Field(0.2, gt=0, description="in units of the unit square")
    nugget: float = Field(1e-4, ge=0, description="added to the diagonal, relative to variance")
    dtype: Literal["float32", "float64"] = "float32"


class BlurParams(Params):
    n: int = Field(16, ge=2, le=128, description="grid size of x")
    channels: int = Field(1, ge=1)
    blur: float = Field(1.0, ge=0, description="Gaussian kernel std in pixels (0: identity)")
    mask_fraction: float = Field(1.0, gt=0, le=1, description="fraction of pixels observed")
    mask_seed: int = 0
    subsample: int = Field(1, ge=1, description="keep every k-th pixel in each direction")


class GaussianNoiseParams(Params):
    std: float | None = Field(None, gt=0, description="absolute noise std")
    level: float | None = Field(
        None, gt=0, description="noise std relative to the RMS of each clean sample"
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> GaussianNoiseParams:
        if (self.std is None) == (self.level is None):
            raise ValueError("give exactly one of 'std' (absolute) or 'level' (relative)")
        return self


class LinearGaussianReferenceParams(Params):
    n_samples: int = Field(0, ge=0, description="exact posterior samples per measurement")
