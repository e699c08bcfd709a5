"""Built-in reference problem: linear-Gaussian, with an exact posterior.

* prior ``gaussian-field``: Gaussian random field with squared-exponential covariance;
* forward model ``blur``: Gaussian blur with an optional pixel mask or subsampling;
* noise model ``gaussian``: additive Gaussian, absolute or relative to the clean RMS.

:func:`exact_posterior` gives the closed-form posterior N(m(y), S) and the exact score of the
noised posterior, ``-(S + sigma^2 I)^-1 (x - m(y))``. :func:`make_problem` builds the whole
problem in one call. Attributes are imported lazily so that listing plugins stays torch-free.
"""

from __future__ import annotations

from invdiff.lazy import lazy_exports

_EXPORTS = {
    "GaussianFieldPrior": "invdiff.reference.prior",
    "LinearBlur": "invdiff.reference.forward",
    "GaussianNoise": "invdiff.reference.noise",
    "LinearGaussianPosterior": "invdiff.reference.exact",
    "ExactScore": "invdiff.reference.exact",
    "exact_posterior": "invdiff.reference.exact",
    "ReferenceProblem": "invdiff.reference.problem",
    "make_problem": "invdiff.reference.problem",
}

__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
