"""Registers the ``predictor-corrector`` sampler (no torch import here)."""

from __future__ import annotations

from invdiff.hookspecs import hookimpl
from invdiff_pc.params import PredictorCorrectorParams


@hookimpl
def register_samplers(register):
    register("predictor-corrector", "invdiff_pc.sampler:PredictorCorrector",
             PredictorCorrectorParams,
             "reverse-diffusion predictor + Langevin corrector (Song et al. 2021, VE SDE)")
