"""Parameter models of the score networks (pydantic; no torch import).

:class:`ScoreNetParams` holds what every conditional score net takes (shapes and the speed
switches); the ``invdiff-unet`` plugin subclasses it too.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from invdiff.params import ScoreNetParams


class RefineNetParams(ScoreNetParams):
    ngf: int = Field(64, ge=1, description="base width (64: the paper's 7.4 M-parameter net)")
    noise_conditional: bool = Field(
        True, description="condition the InstanceNorm++ layers on sigma (NCSN); the paper's net: "
                          "False")
    output: Literal["ncsn", "edm"] = Field(
        "edm", description="edm: denoiser preconditioning; ncsn: F / sigma (the paper's net)")
