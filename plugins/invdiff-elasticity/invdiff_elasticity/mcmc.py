"""The reference posterior of the circular inclusion by ensemble MCMC over its parameters.

theta = (cx, cy, r, contrast) under Gaussian noise:

    p(theta | y) ∝ 1[theta in box] exp(-||y - F(field(theta))||^2 / (2 s^2))

(the norm over the measured entries of y: NaN entries were not measured and are left out)

with the uniform prior of :class:`CircularInclusionPrior` (its ranges; a range with equal ends
fixes that parameter), F the forward model (the :class:`ElasticityFEM` measurement; any black
box works) and s the ABSOLUTE noise std. Data made with the core ``gaussian`` noise model and
``level=`` use s = level * RMS(clean y) per sample; the reference likelihood then takes that s
computed from the TRUE clean signal (:func:`relative_noise_std`), treating it as known, which
is what the simulator did. The sampler is the core's (:mod:`invdiff.evaluation.mcmc`: emcee's
affine-invariant stretch move, each half of the ensemble solved in one batched FEM call).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from invdiff.errors import DataError
from invdiff.evaluation.mcmc import MCMCResult, ParameterPosterior, sample_parameter_posterior
from invdiff_elasticity.fem import ElasticityFEM
from invdiff_elasticity.inclusions import CircularInclusionPrior

__all__ = ["InclusionPosterior", "MCMCResult", "reference_posterior", "relative_noise_std"]


def relative_noise_std(y_clean: torch.Tensor, level: float) -> float:
    """s = level * RMS(y_clean) over all entries: the std the core GaussianNoise(level=) used."""
    return float(level * y_clean.double().square().mean().sqrt())


class InclusionPosterior(ParameterPosterior):
    """Gaussian measurement noise of absolute std ``noise_std`` through ``fem``: log L(x) =
    -||y - F(x)||^2 / (2 s^2)."""

    def __init__(self, y: torch.Tensor, noise_std: float, prior: CircularInclusionPrior,
                 fem: ElasticityFEM) -> None:
        y_shape = fem.output_shape(prior.shape)
        y = torch.as_tensor(y, dtype=torch.float64)
        if tuple(y.shape[-len(y_shape):]) != y_shape or y.numel() != int(np.prod(y_shape)):
            raise DataError(f"y has shape {tuple(y.shape)}; expected one measurement {y_shape}")
        if not noise_std > 0:
            raise DataError(f"noise_std={noise_std} must be a positive absolute std")
        self.y, self.noise_std, self.fem = y.reshape(1, *y_shape), float(noise_std), fem
        #: the measured entries (NaN in y: not measured, left out of the likelihood)
        self.measured = ~torch.isnan(self.y)
        if not bool(self.measured.any()):
            raise DataError("y is all NaN (nothing measured); give at least one measured entry")
        super().__init__(self._gaussian, prior)

    def _gaussian(self, x: torch.Tensor) -> torch.Tensor:
        resid = torch.where(self.measured, self.fem(x) - self.y, 0.0)
        return -0.5 * resid.flatten(1).square().sum(1) / self.noise_std**2


def reference_posterior(
    y: torch.Tensor,
    noise_std: float,
    prior: CircularInclusionPrior,
    fem: ElasticityFEM,
    **options: Any,
) -> MCMCResult:
    """Sample p(theta | y) (see the module docstring) and push the draws to field statistics.

    y: one measurement of shape ``fem.output_shape(prior.shape)`` (a leading 1 is allowed);
    noise_std: absolute std s of the Gaussian noise; ``options``: those of
    :func:`sample_parameter_posterior`.
    """
    t0 = time.perf_counter()
    post = InclusionPosterior(y, noise_std, prior, fem)
    res = sample_parameter_posterior(post, **options)
    res.info["noise_std"] = post.noise_std
    res.seconds = time.perf_counter() - t0
    return res
