"""The reference problem in one call."""

from __future__ import annotations

import math
from dataclasses import dataclass

from invdiff.reference.exact import LinearGaussianPosterior, exact_posterior
from invdiff.reference.forward import LinearBlur
from invdiff.reference.noise import GaussianNoise
from invdiff.reference.prior import GaussianFieldPrior


@dataclass
class ReferenceProblem:
    """Prior, forward model, noise model and the exact posterior of one linear-Gaussian setup."""

    prior: GaussianFieldPrior
    forward_model: LinearBlur
    noise_model: GaussianNoise
    posterior: LinearGaussianPosterior


def expected_clean_rms(prior: GaussianFieldPrior, forward_model: LinearBlur) -> float:
    """sqrt(E|A x|^2 / P) under the prior: sqrt((tr(A C A^T) + |A m0|^2) / P)."""
    a = forward_model.matrix()
    c = prior.covariance_matrix()
    m = a @ prior.mean_vector()
    return math.sqrt(float(((a @ c) * a).sum() + m.square().sum()) / a.shape[0])


#: The reference problem observes half the pixels, so that its posterior has both certain and
#: uncertain regions; the ``blur`` component on its own observes every pixel unless told.
PROBLEM_MASK_FRACTION = 0.5


def make_problem(
    n: int = 16,
    blur: float = 1.0,
    mask_fraction: float = PROBLEM_MASK_FRACTION,
    noise_level: float = 0.05,
    length_scale: float = 0.2,
    variance: float = 1.0,
    mean: float = 0.0,
    subsample: int = 1,
    mask_seed: int = 0,
) -> ReferenceProblem:
    """Build the reference problem; ``noise_level`` is relative to the prior's expected clean
    RMS and turned into an absolute std, so the posterior stays exactly Gaussian."""
    prior = GaussianFieldPrior(n=n, mean=mean, variance=variance, length_scale=length_scale)
    fwd = LinearBlur(n=n, blur=blur, mask_fraction=mask_fraction, mask_seed=mask_seed,
                     subsample=subsample)
    noise = GaussianNoise(std=noise_level * expected_clean_rms(prior, fwd))
    return ReferenceProblem(prior, fwd, noise, exact_posterior(prior, fwd, noise))
