"""Registers the ``annealed-langevin`` sampler (no torch import here)."""

from __future__ import annotations

from invdiff.hookspecs import hookimpl
from invdiff_langevin.params import AnnealedLangevinParams


@hookimpl
def register_samplers(register):
    register("annealed-langevin", "invdiff_langevin.sampler:AnnealedLangevin",
             AnnealedLangevinParams,
             "annealed Langevin dynamics (NCSNv2 / cSDM Alg. 1), T steps per noise level")
