"""Registers the ``refinenet`` score net (no torch import here)."""

from __future__ import annotations

from invdiff.hookspecs import hookimpl
from invdiff_refinenet.params import RefineNetParams


@hookimpl
def register_score_nets(register):
    register("refinenet", "invdiff_refinenet.net:ConditionalRefineNet", RefineNetParams,
             "conditional NCSNv2 RefineNet (cSDM), output divided by sigma")
