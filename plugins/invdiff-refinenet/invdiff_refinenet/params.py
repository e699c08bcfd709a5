"""Parameter models of the score networks (pydantic; no torch import).

:class:`ScoreNetParams` holds what every conditional score net takes (shapes and the speed
switches); the ``invdiff-unet`` plugin subclasses it too.
"""

from __future__ import annotations

from pydantic import Field

from invdiff.reference.params import Params

Shape3 = tuple[int, int, int]


class ScoreNetParams(Params):
    """Shapes of one x and one y (channels first) and the speed switches."""

    x_shape: Shape3 = Field(description="shape of one x: (channels, H, W)")
    y_shape: Shape3 = Field(description="shape of one y: (channels, Hy, Wy)")
    channels_last: bool = Field(False, description="run convolutions in channels_last layout")
    bf16: bool = Field(False, description="bfloat16 autocast inside forward (output in x's dtype)")


class RefineNetParams(ScoreNetParams):
    ngf: int = Field(64, ge=1, description="base width (64: the paper's 7.4 M-parameter net)")
