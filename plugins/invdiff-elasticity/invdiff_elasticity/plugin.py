"""Registers the elasticity components (torch-free: factories are import strings)."""

from __future__ import annotations

from invdiff.hookspecs import hookimpl
from invdiff.params import MCMCReferenceParams
from invdiff_elasticity.params import (
    CircularInclusionParams,
    ElasticityFEMParams,
    LognormalFieldParams,
    MultiInclusionParams,
)


@hookimpl
def register_priors(register):
    register("circular-inclusion", "invdiff_elasticity.inclusions:CircularInclusionPrior",
             CircularInclusionParams, "one disc (centre, radius, contrast) in a unit background")
    register("multi-inclusion", "invdiff_elasticity.inclusions:MultiInclusionPrior",
             MultiInclusionParams, "1-3 stiff or soft discs in a unit background")
    register("lognormal-field", "invdiff_elasticity.lognormal:LognormalFieldPrior",
             LognormalFieldParams, "exp of a squared-exponential Gaussian random field")


@hookimpl
def register_forward_models(register):
    register("elasticity-fem", "invdiff_elasticity.fem:ElasticityFEM", ElasticityFEMParams,
             "bilinear-quad FEM of a compressed elastic square (u_y at element centres)")


@hookimpl
def register_references(register):
    register("inclusion-mcmc", "invdiff_elasticity.reference:InclusionMCMCReference",
             MCMCReferenceParams, "parametric-prior posterior by ensemble MCMC, Gaussian noise")
