"""Conditional NCSNv2 RefineNet score network for invdiff.

Nothing heavy is imported here: ``invdiff plugins`` loads :mod:`invdiff_refinenet.plugin` only,
and the network module is imported when a net is built.
"""

from __future__ import annotations

from invdiff.lazy import lazy_exports

_EXPORTS = {"ConditionalRefineNet": "invdiff_refinenet.net"}

__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
