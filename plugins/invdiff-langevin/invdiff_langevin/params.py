"""Parameter models of the ladder samplers (pydantic; no torch import).

:class:`LadderParams` holds what every sampler built on :class:`invdiff.sampling.LadderSampler`
takes; the ``invdiff-pc`` plugin subclasses it too.
"""

from __future__ import annotations

from pydantic import Field

from invdiff.params import DEFAULT_STEPS_PER_LEVEL, LadderParams


class AnnealedLangevinParams(LadderParams):
    steps_per_level: int = Field(DEFAULT_STEPS_PER_LEVEL, ge=1,
                                 description="T: Langevin steps per noise level")
    eps: float | None = Field(
        None, gt=0, description="step a_i = eps (sigma_i/sigma_L)^2; default: NCSNv2 rule"
    )
