"""Probability-flow ODE samplers for invdiff (samplers ``heun`` and ``dpm-2m``).

Nothing heavy is imported here: ``invdiff plugins`` loads :mod:`invdiff_edm.plugin` only; the
sampler module (and torch) is imported when a sampler is built.
"""

from __future__ import annotations

from invdiff.lazy import lazy_exports

_EXPORTS = {
    "DPMSolver2M": "invdiff_edm.sampler",
    "Heun": "invdiff_edm.sampler",
    "ODESampler": "invdiff_edm.sampler",
    "karras_sigmas": "invdiff_edm.sampler",
}

__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
