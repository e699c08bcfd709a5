"""Conditional U-Net score network for invdiff (lazy: importing this does not import torch)."""

from __future__ import annotations

from typing import Any

__all__ = ["ConditionalUNet"]


def __getattr__(name: str) -> Any:
    if name == "ConditionalUNet":
        from invdiff_unet.net import ConditionalUNet

        return ConditionalUNet
    raise AttributeError(f"module 'invdiff_unet' has no attribute {name!r}")
