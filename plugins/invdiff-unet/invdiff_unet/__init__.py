"""Conditional U-Net score network for invdiff (lazy: importing this does not import torch)."""

from __future__ import annotations

from invdiff.lazy import lazy_exports

_EXPORTS = {"ConditionalUNet": "invdiff_unet.net"}

__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
