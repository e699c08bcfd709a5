"""Parameter model of the flow-matching objective (pydantic; no torch import)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from invdiff.params import Params


class FlowMatchingParams(Params):
    time_sampling: Literal["uniform", "logit-normal"] = Field(
        "uniform", description="how t is drawn: uniform on the ladder's range of t, or "
        "logit-normal (Esser et al. 2024), which favours the middle of the path")
    logit_mean: float = Field(0.0, description="logit-normal: mean of logit t")
    logit_std: float = Field(1.0, gt=0, description="logit-normal: std of logit t")
