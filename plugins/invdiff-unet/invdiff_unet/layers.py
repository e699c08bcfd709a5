"""Building blocks of the conditional U-Net: residual and attention blocks (the noise
embedding is the core's :class:`invdiff.scorenet.FourierEmbedding`).

Every block takes ``(h, emb)`` so the U-Net can run its encoder and decoder as plain lists;
blocks that do not use the noise embedding ignore it. GroupNorm normalises each example on its
own, so the net is batch-independent.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


def zero_init(module: nn.Module) -> nn.Module:
    """Zero the weights and bias: a residual branch starts as the identity map, and the final
    convolution starts at ``F = 0`` (so the EDM score starts as the N(0, I) prior score)."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    """Residual block with noise scale/shift (FiLM), as in ADM / EDM::

        h1  = conv1(SiLU(GN(h)))
        h2  = GN(h1) * (1 + scale(e)) + shift(e)
        out = (skip(h) + conv2(dropout(SiLU(h2)))) / sqrt(2)

    ``conv2`` starts at zero, so each block starts as (a scaled) identity; the ``1/sqrt(2)``
    keeps the variance of the sum of two unit-variance branches at one.
    """

    def __init__(self, cin: int, cout: int, emb_dim: int, groups: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.film = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, 2 * cout))
        self.norm2 = nn.GroupNorm(groups, cout)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = zero_init(nn.Conv2d(cout, cout, 3, padding=1))
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.silu(self.norm1(h)))
        scale, shift = rearrange(self.film(emb), "b (two c) -> two b c 1 1", two=2)
        out = self.norm2(out) * (1 + scale) + shift
        out = self.conv2(self.dropout(F.silu(out)))
        return (self.skip(h) + out) * math.sqrt(0.5)


class AttentionBlock(nn.Module):
    """Multi-head self-attention over the grid points: ``h + proj(softmax(q k^T / sqrt(d)) v)``.

    Used at coarse levels only (cost grows like (H W)^2). ``proj`` starts at zero.
    """

    def __init__(self, channels: int, heads: int, groups: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm = nn.GroupNorm(groups, channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = zero_init(nn.Conv2d(channels, channels, 1))

    def forward(self, h: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        height = h.shape[-2]
        q, k, v = rearrange(self.qkv(self.norm(h)), "b (three n d) x y -> three b n (x y) d",
                            three=3, n=self.heads)
        out = F.scaled_dot_product_attention(q, k, v)
        out = rearrange(out, "b n (x y) d -> b (n d) x y", x=height)
        return h + self.proj(out)


class ResAttn(nn.Module):
    """A residual block, optionally followed by self-attention."""

    def __init__(self, res: ResBlock, attn: AttentionBlock | None) -> None:
        super().__init__()
        self.res = res
        self.attn = attn

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.res(h, emb)
        return h if self.attn is None else self.attn(h)


class Downsample(nn.Module):
    """Halve the grid with a stride-2 3x3 convolution."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, h: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        return self.conv(h)


class Upsample(nn.Module):
    """Double the grid: nearest-neighbour upsampling, then a 3x3 convolution."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, h: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        return self.conv(F.interpolate(h, scale_factor=2.0, mode="nearest"))
