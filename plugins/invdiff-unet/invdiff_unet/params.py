"""Parameter model of the ``unet`` score net (pydantic; no torch import)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from invdiff.params import ScoreNetParams


class UNetParams(ScoreNetParams):
    base_width: int = Field(64, ge=1, description="channels at the finest level")
    channel_mult: tuple[int, ...] = Field(
        (1, 2, 2), min_length=1, description="width multiplier per level; len - 1 = downsamplings"
    )
    num_res_blocks: int = Field(2, ge=1, description="residual blocks per level (depth)")
    attention_levels: tuple[int, ...] | None = Field(
        None, description="levels (0 = finest) with self-attention; None: the coarsest; (): none"
    )
    attention_heads: int = Field(4, ge=1)
    norm_groups: int = Field(8, ge=1, description="GroupNorm groups (must divide every width)")
    embedding_dim: int | None = Field(None, ge=2, description="noise embedding; None: 4 x base")
    dropout: float = Field(0.0, ge=0, lt=1)
    y_every_level: bool = Field(
        False, description="also feed y (average-pooled) to every coarser level of the encoder "
        "and decoder, not only at the input"
    )
    output: Literal["edm", "ncsn"] = Field(
        "edm", description="edm: denoiser preconditioning (sigma_data = 1); ncsn: F / sigma"
    )
