"""Annealed Langevin dynamics for invdiff (sampler ``annealed-langevin``).

Nothing heavy is imported here: ``invdiff plugins`` loads :mod:`invdiff_langevin.plugin` only;
the sampler module (and torch) is imported when a sampler is built.
"""

from __future__ import annotations

from typing import Any

__all__ = ["AnnealedLangevin"]


def __getattr__(name: str) -> Any:
    if name == "AnnealedLangevin":
        from invdiff_langevin.sampler import AnnealedLangevin

        return AnnealedLangevin
    raise AttributeError(f"module 'invdiff_langevin' has no attribute {name!r}")
