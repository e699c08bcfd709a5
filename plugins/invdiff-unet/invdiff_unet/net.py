r"""Conditional U-Net score network with EDM preconditioning.

Network ``F(h, c)``: the input ``h = [x_in, y_r]`` (y resampled to x's grid) goes through an
ADM/DDPM-style U-Net: ``len(channel_mult)`` levels of ``num_res_blocks`` residual blocks
(GroupNorm, SiLU, FiLM scale/shift from the noise embedding ``e(c)``, optional self-attention),
stride-2 downsampling between levels, a middle block, and a mirrored decoder that concatenates
the encoder's skips; the last convolution starts at zero.

With ``y_every_level`` the measurement also enters at every coarser resolution: where the
encoder or decoder arrives at level ``l`` (after each down- or upsampling), ``y_r`` average-pooled
by ``2^l`` goes through a 3x3 convolution and is added to the features. The convolutions start
at zero, so such a net starts as the plain one; they give the coarse levels, which see the
whole field, a direct view of y instead of what survived the finer levels.

Output parameterisation (``output``; the maths in
:meth:`invdiff.scorenet.ConditionalScoreNet.parameterised_score`), with ``c_noise = ln(sigma) / 4``:

* ``"edm"`` (default; Karras et al. 2022): ``s = (F(c_in x, y, c_noise) / sigma - c_in x) c_in``
  with ``c_in = 1 / sqrt(1 + sigma^2)``; input and regression target have unit variance at every
  sigma, and ``F = 0`` (the zero-initialised last convolution) is the N(0, I) prior score.
* ``"ncsn"``: ``s = F(x, y, c_noise) / sigma`` (Song & Ermon), as in the RefineNet but with the
  noise level also fed to the network.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from invdiff.errors import ConfigError
from invdiff.scorenet import ConditionalScoreNet, FourierEmbedding, check_output
from invdiff_unet.layers import (
    AttentionBlock,
    Downsample,
    ResAttn,
    ResBlock,
    Upsample,
    zero_init,
)

__all__ = ["ConditionalUNet"]


class ConditionalUNet(ConditionalScoreNet):
    """Conditional U-Net ``s(x, y, sigma)``; see the module docstring for the maths.

    x_shape, y_shape: ``(C, H, W)`` of one x and one y; H and W of x must be divisible by
        ``2 ** (len(channel_mult) - 1)``.
    base_width: channels at the finest level; level ``l`` has ``base_width * channel_mult[l]``.
    num_res_blocks: residual blocks per level in the encoder (the decoder has one more).
    attention_levels: levels with self-attention (0 = finest); None: the coarsest level only
        (and the middle block); ``()``: no attention.
    attention_heads, norm_groups: must divide the widths where they are used.
    embedding_dim: width of the noise embedding (None: ``4 * base_width``).
    dropout: in the residual blocks (training mode only).
    output: ``"edm"`` (default) or ``"ncsn"``.
    y_every_level: also add (pooled, convolved) y at every coarser level (module docstring).
    channels_last, bf16: speed switches, see :class:`ConditionalScoreNet`.
    """

    def __init__(
        self,
        x_shape: tuple[int, int, int],
        y_shape: tuple[int, int, int],
        base_width: int = 64,
        channel_mult: tuple[int, ...] = (1, 2, 2),
        num_res_blocks: int = 2,
        attention_levels: tuple[int, ...] | None = None,
        attention_heads: int = 4,
        norm_groups: int = 8,
        embedding_dim: int | None = None,
        dropout: float = 0.0,
        output: str = "edm",
        y_every_level: bool = False,
        channels_last: bool = False,
        bf16: bool = False,
    ) -> None:
        super().__init__(x_shape, y_shape, channels_last=channels_last, bf16=bf16)
        widths = [base_width * m for m in channel_mult]
        n_levels = len(widths)
        if attention_levels is None:
            attention_levels = (n_levels - 1,)
        self._validate(widths, attention_levels, attention_heads, norm_groups, output)
        self.output = output
        emb_dim = embedding_dim or 4 * base_width

        def block(cin: int, cout: int, level: int) -> ResAttn:
            attn = (AttentionBlock(cout, attention_heads, norm_groups)
                    if level in attention_levels else None)
            return ResAttn(ResBlock(cin, cout, emb_dim, norm_groups, dropout), attn)

        self.embed = FourierEmbedding(emb_dim)
        self.conv_in = nn.Conv2d(self.in_channels, base_width, 3, padding=1)
        # Encoder: every module's output is a skip for the decoder.
        self.down = nn.ModuleList()
        skip_widths, ch = [base_width], base_width
        y_down, y_up = [], []  # feature widths where y re-enters (encoder, decoder)
        for level, width in enumerate(widths):
            for _ in range(num_res_blocks):
                self.down.append(block(ch, width, level))
                ch = width
                skip_widths.append(ch)
            if level < n_levels - 1:
                self.down.append(Downsample(ch))
                skip_widths.append(ch)
                y_down.append(ch)
        coarsest = n_levels - 1
        self.mid = nn.ModuleList([block(ch, ch, coarsest),
                                  ResAttn(ResBlock(ch, ch, emb_dim, norm_groups, dropout), None)])
        # Decoder: each residual block eats one skip (concatenated on channels).
        self.up = nn.ModuleList()
        for level in reversed(range(n_levels)):
            for _ in range(num_res_blocks + 1):
                self.up.append(block(ch + skip_widths.pop(), widths[level], level))
                ch = widths[level]
            if level > 0:
                self.up.append(Upsample(ch))
                y_up.append(ch)
        self.y_every_level = y_every_level
        if y_every_level:
            cy = self.y_shape[0]
            self.y_down = nn.ModuleList(zero_init(nn.Conv2d(cy, w, 3, padding=1)) for w in y_down)
            self.y_up = nn.ModuleList(zero_init(nn.Conv2d(cy, w, 3, padding=1)) for w in y_up)
        self.norm_out = nn.GroupNorm(norm_groups, ch)
        self.conv_out = zero_init(nn.Conv2d(ch, self.out_channels, 3, padding=1))
        if self.channels_last:
            self.to(memory_format=torch.channels_last)

    def _validate(
        self,
        widths: list[int],
        attention_levels: tuple[int, ...],
        heads: int,
        groups: int,
        output: str,
    ) -> None:
        """Raise :class:`ConfigError` for settings the architecture cannot honour."""
        factor = 2 ** (len(widths) - 1)
        _, height, width = self.x_shape
        if height % factor or width % factor:
            raise ConfigError(
                f"unet with {len(widths)} levels halves the grid {len(widths) - 1} times, so H "
                f"and W must be divisible by {factor}; got x_shape {self.x_shape}. Use fewer "
                f"levels (shorter channel_mult) or pad x"
            )
        if min(widths) < 1:
            raise ConfigError(f"widths {widths}: base_width and channel_mult must be positive")
        bad = [w for w in widths if w % groups]
        if bad:
            raise ConfigError(
                f"norm_groups = {groups} does not divide the widths {bad}: choose norm_groups "
                f"dividing base_width * m for every m in channel_mult"
            )
        for level in attention_levels:
            if not 0 <= level < len(widths):
                raise ConfigError(
                    f"attention level {level} does not exist: levels are 0..{len(widths) - 1}"
                )
            if widths[level] % heads:
                raise ConfigError(
                    f"attention_heads = {heads} does not divide the width {widths[level]} of "
                    f"level {level}"
                )
        check_output(output)

    def body(self, h: torch.Tensor, *cond: torch.Tensor) -> torch.Tensor:
        """``F``: ``h = [x_in, y_r] (B, Cx + Cy, H, W)``, ``c_noise (B,)`` -> ``(B, Cx, H, W)``."""
        (c_noise,) = cond
        emb = self.embed(c_noise)
        ys = self._y_pyramid(h[:, self.x_shape[0]:]) if self.y_every_level else None
        h = self.conv_in(h)
        skips, level = [h], 0
        for module in self.down:
            h = module(h, emb)
            if ys is not None and isinstance(module, Downsample):
                level += 1
                h = h + self.y_down[level - 1](ys[level])
            skips.append(h)
        for module in self.mid:
            h = module(h, emb)
        for module in self.up:
            if not isinstance(module, Upsample):
                h = torch.cat([h, skips.pop()], dim=1)
            h = module(h, emb)
            if ys is not None and isinstance(module, Upsample):
                level -= 1
                h = h + self.y_up[len(self.y_up) - 1 - level](ys[level])
        return self.conv_out(F.silu(self.norm_out(h)))

    def _y_pyramid(self, y_r: torch.Tensor) -> list[torch.Tensor]:
        """``y_r (B, Cy, H, W)`` average-pooled to every level: entry l is ``(B, Cy, H/2^l,
        W/2^l)`` (entry 0 is y_r itself)."""
        out = [y_r]
        for _ in range(len(self.y_down)):
            out.append(F.avg_pool2d(out[-1], 2))
        return out

    def score(self, x: torch.Tensor, y: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """The score from ``F`` under the chosen parameterisation; ``sigma (B, 1, 1, 1)``."""
        return self.parameterised_score(x, y, sigma, self.output, sigma.flatten().log() / 4)
