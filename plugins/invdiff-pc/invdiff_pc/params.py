"""Parameter model of the predictor-corrector sampler (pydantic; no torch import)."""

from __future__ import annotations

from pydantic import Field

from invdiff.params import LadderParams


class PredictorCorrectorParams(LadderParams):
    snr: float = Field(0.16, gt=0, description="corrector's target signal-to-noise ratio r")
    corrector_steps: int = Field(
        1, ge=0, description="Langevin corrector steps per level (0: predictor only)"
    )
