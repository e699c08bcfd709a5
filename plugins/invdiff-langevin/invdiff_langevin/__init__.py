"""Annealed Langevin dynamics for invdiff (sampler ``annealed-langevin``).

Nothing heavy is imported here: ``invdiff plugins`` loads :mod:`invdiff_langevin.plugin` only;
the sampler module (and torch) is imported when a sampler is built.
"""

from __future__ import annotations

from invdiff.lazy import lazy_exports

_EXPORTS = {"AnnealedLangevin": "invdiff_langevin.sampler"}

__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
