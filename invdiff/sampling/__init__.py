"""Sampling: draw from p(x | y) with a trained score.

* ``sigmas``: noise ladders (geometric, NCSNv2 heuristics, checks);
* ``ladder``: the one loop every noise-ladder sampler runs (:class:`LadderSampler`,
  :class:`Chains`);
* ``posterior``: :func:`sample_posterior` in physical units and its :class:`Posterior`.

Names load lazily.
"""

from __future__ import annotations

from invdiff.lazy import lazy_exports

_EXPORTS = {
    "Chains": "invdiff.sampling.ladder",
    "LadderSampler": "invdiff.sampling.ladder",
    "snr_step_size": "invdiff.sampling.ladder",
    "Posterior": "invdiff.sampling.posterior",
    "sample_posterior": "invdiff.sampling.posterior",
    "sample_measurements": "invdiff.sampling.posterior",
    "quantile": "invdiff.sampling.posterior",
    "geometric": "invdiff.sampling.sigmas",
    "suggest": "invdiff.sampling.sigmas",
    "check_ladder": "invdiff.sampling.sigmas",
    "langevin_step_size": "invdiff.sampling.sigmas",
}

__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
