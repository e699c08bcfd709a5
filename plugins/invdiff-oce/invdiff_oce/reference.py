"""Reference posterior of the tumour-spheroid OCE problem: ensemble MCMC over the prior's 9
parameters with the exact phase-noise likelihood.

    p(theta | y) ∝ 1[theta in box] prod_pixels p_e(wrap(y - F(field(theta))) | Delta, row)

(:mod:`invdiff_oce.likelihood`; exact when the noise model's speckle is unsmoothed), sampled by
the elasticity plugin's stretch-move ensemble (:func:`invdiff_elasticity.mcmc.
sample_parameter_posterior`). The orientation is an angle of period pi: when its range is the
full period it moves on the circle (an ellipse at theta and theta + pi is the same).
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch
from invdiff_elasticity.mcmc import MCMCResult, ParameterPosterior, sample_parameter_posterior

from invdiff_oce.forward import OCEPhaseForward
from invdiff_oce.likelihood import OCELikelihood, PhaseErrorTable
from invdiff_oce.noise import OCEPhaseNoise
from invdiff_oce.spheroid import NAMES, TumourSpheroidPrior


def orientation_period(prior: TumourSpheroidPrior) -> dict[int, float]:
    """{index of theta: pi} when the orientation range spans one period, else {}."""
    i = NAMES.index("theta")
    lo, hi = prior.ranges[i]
    return {i: math.pi} if math.isclose(hi - lo, math.pi, rel_tol=1e-9) else {}


def reference_posterior(y: torch.Tensor, prior: TumourSpheroidPrior, forward: OCEPhaseForward,
                        noise: OCEPhaseNoise, table: PhaseErrorTable | None = None,
                        **options: Any) -> MCMCResult:
    """Sample p(theta | y) for one phase image ``y (1, N, N)`` (a leading 1 is allowed).

    ``table``: a prebuilt :class:`PhaseErrorTable` for this noise model (reuse it across
    measurements: building one takes seconds); ``options``: those of
    :func:`sample_parameter_posterior` (n_steps, n_walkers >= 20, seed, burn_in, ...).
    """
    t0 = time.perf_counter()
    likelihood = OCELikelihood(y, forward, noise, table)
    post = ParameterPosterior(likelihood, prior, periods=orientation_period(prior))
    res = sample_parameter_posterior(post, **options)
    res.seconds = time.perf_counter() - t0
    return res
