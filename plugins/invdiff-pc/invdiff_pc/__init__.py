"""Predictor-corrector sampler for invdiff (sampler ``predictor-corrector``).

Nothing heavy is imported here: ``invdiff plugins`` loads :mod:`invdiff_pc.plugin` only; the
sampler module (and torch) is imported when a sampler is built.
"""

from __future__ import annotations

from typing import Any

__all__ = ["PredictorCorrector"]


def __getattr__(name: str) -> Any:
    if name == "PredictorCorrector":
        from invdiff_pc.sampler import PredictorCorrector

        return PredictorCorrector
    raise AttributeError(f"module 'invdiff_pc' has no attribute {name!r}")
