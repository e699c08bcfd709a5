"""Registers the built-in training objective through the plugin manager, like any plugin."""

from __future__ import annotations

from invdiff.hookspecs import hookimpl
from invdiff.params import Params


class DenoisingScoreMatchingParams(Params):
    """The DSM objective takes its settings from the training section (``loss_weighting``,
    ``sigma_sampling``, ``sigma_log_mean``, ``sigma_log_std``), so it has none of its own."""


@hookimpl
def register_objectives(register):
    register("dsm", "invdiff.training.objective:DenoisingScoreMatching",
             DenoisingScoreMatchingParams,
             "denoising score matching (NCSNv2 sigma^2 or EDM weighting; the default)")
