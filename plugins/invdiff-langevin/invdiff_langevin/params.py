"""Parameter models of the ladder samplers (pydantic; no torch import).

:class:`LadderParams` holds what every sampler built on :class:`invdiff.sampling.LadderSampler`
takes; the ``invdiff-pc`` plugin subclasses it too.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from invdiff.reference.params import Params


class LadderParams(Params):
    """Parameters of the shared sampling loop."""

    x_shape: tuple[int, ...] | None = Field(
        None, description="shape of one x (C, H, W); default: the score's x_shape"
    )
    init: Literal["gaussian", "uniform"] = Field(
        "gaussian", description="start: N(0, sigma_1^2 I) or U(-1, 1)"
    )
    chunk_size: int | None = Field(
        None, ge=1, description="at most this many chains per score call (memory cap)"
    )
    final_denoise: bool = Field(True, description="end with x + sigma_L^2 s(x, y, sigma_L)")
    progress: bool = Field(True, description="show a progress bar")


class AnnealedLangevinParams(LadderParams):
    steps_per_level: int = Field(5, ge=1, description="T: Langevin steps per noise level")
    eps: float | None = Field(
        None, gt=0, description="step a_i = eps (sigma_i/sigma_L)^2; default: NCSNv2 rule"
    )
