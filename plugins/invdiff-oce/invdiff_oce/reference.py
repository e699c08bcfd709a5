"""Reference posteriors of the tumour-spheroid OCE problem.

* ``spheroid-mcmc``: ensemble MCMC over the prior's 9 parameters with the exact phase-noise
  likelihood,

      p(theta | y) ∝ 1[theta in box] prod_pixels p_e(wrap(y - F(field(theta))) | Delta, row)

  (:mod:`invdiff_oce.likelihood`; exact when the noise model's speckle is unsmoothed), sampled
  by the core's ensemble MCMC, emcee's affine-invariant stretch move
  (:func:`invdiff.evaluation.mcmc.sample_parameter_posterior`).
  The orientation is an angle of period pi: when its range is the full period it moves on the
  circle (an ellipse at theta and theta + pi is the same).
* ``oce-algebraic``: the stress/strain estimate (:mod:`invdiff_oce.algebraic`), a point
  estimate (no std) kept as a baseline.
"""

from __future__ import annotations

import functools
import math
import time
from typing import Any

import torch

from invdiff.evaluation.mcmc import (
    MCMCResult,
    ParameterMCMCReference,
    ParameterPosterior,
    sample_parameter_posterior,
)
from invdiff.interfaces import ReferencePosterior, ReferenceResult
from invdiff_oce.forward import OCEPhaseForward
from invdiff_oce.likelihood import OCELikelihood, PhaseErrorTable
from invdiff_oce.noise import OCEPhaseNoise
from invdiff_oce.spheroid import NAMES, TumourSpheroidPrior

#: the likelihood tables built in this process, by noise-model settings and image height: every
#: reference of the same noise (a study's held-out sets, complete and with gaps) shares one
_TABLES: dict[tuple[Any, str, int], PhaseErrorTable] = {}
_MAX_TABLES = 4  # a few MB each


def phase_error_table(noise: OCEPhaseNoise, height: int) -> PhaseErrorTable:
    """The :class:`PhaseErrorTable` of ``noise``'s settings for ``height`` rows, built once per
    process (seconds) and shared by every reference that asks for the same settings."""
    key = (type(noise), repr(sorted(vars(noise).items())), int(height))
    if key not in _TABLES:
        while len(_TABLES) >= _MAX_TABLES:
            _TABLES.pop(next(iter(_TABLES)))
        _TABLES[key] = PhaseErrorTable(noise, int(height))
    return _TABLES[key]


def orientation_period(prior: TumourSpheroidPrior) -> dict[int, float]:
    """{index of theta: pi} when the orientation range spans one period, else {}."""
    i = NAMES.index("theta")
    lo, hi = prior.ranges[i]
    return {i: math.pi} if math.isclose(hi - lo, math.pi, rel_tol=1e-9) else {}


def spheroid_posterior(y: torch.Tensor, prior: TumourSpheroidPrior, forward: OCEPhaseForward,
                       noise: OCEPhaseNoise, table: PhaseErrorTable | None = None
                       ) -> ParameterPosterior:
    """p(theta | y) of one phase image ``y (1, N, N)`` (module docstring)."""
    likelihood = OCELikelihood(y, forward, noise, table)
    return ParameterPosterior(likelihood, prior, periods=orientation_period(prior))


def reference_posterior(y: torch.Tensor, prior: TumourSpheroidPrior, forward: OCEPhaseForward,
                        noise: OCEPhaseNoise, table: PhaseErrorTable | None = None,
                        **options: Any) -> MCMCResult:
    """Sample p(theta | y) for one phase image ``y (1, N, N)`` (a leading 1 is allowed).

    ``table``: a prebuilt :class:`PhaseErrorTable` for this noise model (reuse it across
    measurements: building one takes seconds); ``options``: those of
    :func:`sample_parameter_posterior` (n_steps, n_walkers >= 20, seed, burn_in, ...).
    """
    t0 = time.perf_counter()
    res = sample_parameter_posterior(spheroid_posterior(y, prior, forward, noise, table),
                                     **options)
    res.seconds = time.perf_counter() - t0
    return res


class SpheroidMCMCReference(ParameterMCMCReference):
    """The ``spheroid-mcmc`` reference (module docstring); parameters:
    :class:`invdiff.params.MCMCReferenceParams` (n_walkers >= 20 for the 9 parameters)."""

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self._tables: dict[int, Any] = {}

    def fits(self, prior: Any, forward_model: Any, noise_model: Any) -> str | None:
        if not isinstance(prior, TumourSpheroidPrior):
            return f"the prior {type(prior).__name__} is not the tumour-spheroid prior"
        if not isinstance(noise_model, OCEPhaseNoise):
            return f"the noise model {type(noise_model).__name__} is not oce-phase-noise"
        if not noise_model.independent_pixels:
            return ("spheroid-mcmc has the exact likelihood only for unsmoothed speckle: set the "
                    "noise model's speckle_smoothing = 0.0 (or speckle = false)")
        return None

    def parameter_posterior(self, prior: Any, forward_model: Any, noise_model: Any,
                            y: torch.Tensor, y_clean: torch.Tensor | None
                            ) -> ParameterPosterior:
        # one table per noise model, built by the first chain that needs it (seconds) and
        # shared with the other references of the same settings (phase_error_table)
        table = self._tables.setdefault(
            id(noise_model), functools.partial(phase_error_table, noise_model, y.shape[-2]))
        return spheroid_posterior(y, prior, forward_model, noise_model, table())


class AlgebraicReference(ReferencePosterior):
    """The ``oce-algebraic`` point estimate, with the compliant layer the prior has."""

    def fits(self, prior: Any, forward_model: Any, noise_model: Any) -> str | None:
        if not hasattr(prior, "layer_modulus"):
            return f"the prior {type(prior).__name__} has no compliant layer (layer_modulus)"
        return None

    def __call__(self, prior: Any, forward_model: Any, noise_model: Any, y: torch.Tensor,
                 y_clean: torch.Tensor | None = None) -> ReferenceResult:
        from invdiff_oce.algebraic import algebraic_estimate

        t0 = time.perf_counter()
        est = algebraic_estimate(y, prior.layer_modulus, prior.layer_thickness)
        return ReferenceResult(index=list(range(len(y))), mean=est, std=None,
                               seconds=(time.perf_counter() - t0) / len(y))
