"""invdiff plugin for quasi-static elastography on the unit square.

* forward model ``elasticity-fem``: :class:`ElasticityFEM`, bilinear-quad FEM of incompressible
  plane stress (or plane strain with selective reduced integration), displacement or traction
  loading, measurements u_y at element centres, both components, or nodal;
* priors ``circular-inclusion``, ``multi-inclusion`` (area-fraction inclusions on a unit
  background) and ``lognormal-field`` (exp of a Gaussian random field);
* reference ``inclusion-mcmc`` (:mod:`invdiff_elasticity.mcmc`): the posterior over the
  circular-inclusion parameters by the core's ensemble MCMC (:mod:`invdiff.evaluation.mcmc`).

Attributes load lazily so that listing plugins never imports torch.
"""

from __future__ import annotations

from invdiff.lazy import lazy_exports

_EXPORTS = {
    "ElasticityFEM": "invdiff_elasticity.fem",
    "CircularInclusionPrior": "invdiff_elasticity.inclusions",
    "MultiInclusionPrior": "invdiff_elasticity.inclusions",
    "LognormalFieldPrior": "invdiff_elasticity.lognormal",
    "reference_posterior": "invdiff_elasticity.mcmc",
    "MCMCResult": "invdiff_elasticity.mcmc",
    "InclusionMCMCReference": "invdiff_elasticity.reference",
}

__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
