"""Parameter models of the ODE samplers (pydantic; no torch import)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from invdiff.params import LadderParams


class ODEParams(LadderParams):
    """The schedule and the two ends shared by the ODE samplers."""

    steps: int = Field(25, ge=2, description="N: noise levels of the schedule, both ends included")
    sigma_max: float | None = Field(
        None, gt=0, description="top of the schedule (default: the ladder's sigma_1)"
    )
    sigma_min: float | None = Field(
        None, gt=0, description="bottom of the schedule (default: the ladder's sigma_L)"
    )
    rho: float | None = Field(
        7.0, gt=0, description="Karras et al.'s rho of the schedule; None or inf: geometric"
    )
    final_step: Literal["ode", "tweedie"] = Field(
        "ode", description="last step sigma_min -> 0 (with final_denoise): 'ode' x + "
        "sigma_min^2 s / 2, or 'tweedie' x + sigma_min^2 s (EDM's last Euler step)"
    )
    shift_start: bool = Field(
        True, description="start at x + D(x, sigma_max) (the posterior mean estimate) instead "
        "of x ~ N(0, sigma_max^2 I); one more score evaluation"
    )
    on_ladder: bool | None = Field(
        None, description="move every level to the nearest level of the training ladder, "
        "repeats dropped, so a net is asked only where it was trained (None: when the score "
        "carries its ladder, score.sigmas, as a trained ScoreModel does)"
    )


class HeunParams(ODEParams):
    s_churn: float = Field(0.0, ge=0, description="EDM churn: total noise added (0: the ODE)")
    s_tmin: float = Field(0.0, ge=0, description="churn only at sigma_i >= s_tmin")
    s_tmax: float | None = Field(None, gt=0, description="churn only at sigma_i <= s_tmax")
    s_noise: float = Field(1.0, gt=0, description="std multiplier of the churn noise")


class DPMSolver2MParams(ODEParams):
    steps: int = Field(24, ge=2, description="N: noise levels of the schedule, both ends included")
    rho: float | None = Field(
        None, gt=0, description="Karras et al.'s rho of the schedule; None or inf: geometric, i.e. "
        "uniform in log sigma (DPM-Solver's own spacing)"
    )
