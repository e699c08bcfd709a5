"""Registers the ``unet`` score net (no torch import here)."""

from __future__ import annotations

from invdiff.hookspecs import hookimpl
from invdiff_unet.params import UNetParams


@hookimpl
def register_score_nets(register):
    register("unet", "invdiff_unet.net:ConditionalUNet", UNetParams,
             "conditional U-Net, log-sigma embedding, EDM preconditioning (or NCSN F/sigma)")
