"""Registers the ``flow-matching`` training objective (no torch import here)."""

from __future__ import annotations

from invdiff.hookspecs import hookimpl
from invdiff_flow.params import FlowMatchingParams


@hookimpl
def register_objectives(register):
    register("flow-matching", "invdiff_flow.objective:FlowMatching", FlowMatchingParams,
             "conditional flow matching, linear interpolant, velocity target (any score net)")
