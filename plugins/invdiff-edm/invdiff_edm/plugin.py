"""Registers the ``heun`` and ``dpm-2m`` samplers (no torch import here)."""

from __future__ import annotations

from invdiff.hookspecs import hookimpl
from invdiff_edm.params import DPMSolver2MParams, HeunParams


@hookimpl
def register_samplers(register):
    register("heun", "invdiff_edm.sampler:Heun", HeunParams,
             "probability-flow ODE, Heun's 2nd-order step on the rho-schedule (Karras et al. "
             "2022), optional churn")
    register("dpm-2m", "invdiff_edm.sampler:DPMSolver2M", DPMSolver2MParams,
             "probability-flow ODE, DPM-Solver++(2M) multistep (Lu et al. 2022): 1 score call "
             "per level")
