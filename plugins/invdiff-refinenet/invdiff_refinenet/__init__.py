"""Conditional NCSNv2 RefineNet score network for invdiff.

Also home of :class:`invdiff.scorenet.ConditionalScoreNet`, the input checks, y resampling
and bf16 / channels_last switches shared with the ``invdiff-unet`` plugin.

Nothing heavy is imported here: ``invdiff plugins`` loads :mod:`invdiff_refinenet.plugin` only,
and the network module is imported when a net is built.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ConditionalRefineNet", "ConditionalScoreNet"]


def __getattr__(name: str) -> Any:
    # Lazy: importing the package must not import torch.
    if name == "ConditionalRefineNet":
        from invdiff_refinenet.net import ConditionalRefineNet

        return ConditionalRefineNet
    if name == "ConditionalScoreNet":
        from invdiff.scorenet import ConditionalScoreNet

        return ConditionalScoreNet
    raise AttributeError(f"module 'invdiff_refinenet' has no attribute {name!r}")
