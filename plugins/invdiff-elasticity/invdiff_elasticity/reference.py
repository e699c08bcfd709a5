"""The ``inclusion-mcmc`` reference: the circular inclusion's posterior by ensemble MCMC over
its parameters (:mod:`invdiff_elasticity.mcmc`), under the core ``gaussian`` noise model.

The noise std s the likelihood uses: the model's absolute ``std``, or for a relative ``level``
s = level x RMS(y_clean) from the true clean measurement when it is known (simulated data),
else estimated from the noisy one, E|y|^2 = (1 + level^2) |y_clean|^2, so
s = level x RMS(y) / sqrt(1 + level^2).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from invdiff.evaluation.mcmc import ParameterMCMCReference, ParameterPosterior
from invdiff.reference.noise import GaussianNoise
from invdiff_elasticity.mcmc import InclusionPosterior, relative_noise_std


def gaussian_noise_std(noise_model: GaussianNoise, y: torch.Tensor,
                       y_clean: torch.Tensor | None) -> float:
    """The absolute std of one measurement's Gaussian noise (module docstring)."""
    if noise_model.std is not None:
        return float(noise_model.std)
    level = float(noise_model.level)
    if y_clean is not None:
        return relative_noise_std(y_clean, level)
    measured = y[~torch.isnan(y)]  # NaN entries were not measured
    return relative_noise_std(measured, level) / math.sqrt(1 + level**2)


class InclusionMCMCReference(ParameterMCMCReference):
    """p(theta | y) of a parametric prior (e.g. ``circular-inclusion``) through any forward
    model under Gaussian noise; parameters: :class:`invdiff.params.MCMCReferenceParams`."""

    def fits(self, prior: Any, forward_model: Any, noise_model: Any) -> str | None:
        why = super().fits(prior, forward_model, noise_model)
        if why is None and not isinstance(noise_model, GaussianNoise):
            why = (f"the noise model {type(noise_model).__name__} is not the gaussian one; "
                   f"inclusion-mcmc has the likelihood of additive Gaussian noise only")
        return why

    def parameter_posterior(self, prior: Any, forward_model: Any, noise_model: Any,
                            y: torch.Tensor, y_clean: torch.Tensor | None
                            ) -> ParameterPosterior:
        return InclusionPosterior(y, gaussian_noise_std(noise_model, y, y_clean), prior,
                                  forward_model)
