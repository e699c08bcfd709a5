"""Conditional flow matching for invdiff (objective ``flow-matching``).

Nothing heavy is imported here: ``invdiff plugins`` loads :mod:`invdiff_flow.plugin` only; the
objective module (and torch) is imported when the objective is built.
"""

from __future__ import annotations

from invdiff.lazy import lazy_exports

_EXPORTS = {"FlowMatching": "invdiff_flow.objective"}

__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
