"""The conditional NCSNv2 RefineNet of cSDM (Dasgupta et al. 2025; Song & Ermon 2020).

Architecture (``c = ngf``; grid ``H x W`` of x)::

    h0 = conv3x3([x, y_r])                                   (c,  H,   W)    y_r: y on x's grid
    l1 = Res(c, c)       Res(c, c)                           (c,  H,   W)
    l2 = Res(c, 2c, down) Res(2c, 2c)                        (2c, H/2, W/2)  mean-pool
    l3 = Res(2c, 2c, down, dil 2) Res(2c, 2c, dil 2)         (2c, H/2, W/2)  dilated, no pool
    l4 = Res(2c, 2c, down, dil 4) Res(2c, 2c, dil 4)         (2c, H/2, W/2)
    r1 = Refine([l4])        r2 = Refine([l3, r1])
    r3 = Refine([l2, r2]) -> c        r4 = Refine([l1, r3], end) -> c    (c, H, W)
    F  = conv3x3(ELU(InstanceNorm++(r4)))                    (Cx, H, W)
    s(x, y, sigma) = F([x, y_r]) / sigma

In the paper's net the network itself does not see sigma: NCSNv2's observation (Song & Ermon
2020, technique 3) is that the score norm scales like 1/sigma, so an unconditional net divided
by sigma can work as well as a noise-conditional one. At ``ngf = 64`` with one x and one y
channel that net has about 7.4 M parameters, the size used in the cSDM paper.

Two options depart from the paper's net, and both are on by default (docs/networks.md measures
why: at CPU budgets the unconditional net hardly uses a weak, spread-out y and samples close to
the prior on elastography and OCE, and its ``F / sigma`` output breaks the probability-flow ODE
samplers). ``noise_conditional=False, output="ncsn"`` is the paper's net:

* ``noise_conditional``: every InstanceNorm++ of the residual stages and the head becomes
  NCSN's conditional InstanceNorm++, its ``gamma, alpha, beta`` shifted by a linear map of a
  Fourier embedding of ``c_noise = ln(sigma) / 4`` (width ``4 ngf``);
* ``output = "edm"``: the EDM preconditioning of the U-Net (the maths in
  :meth:`invdiff.scorenet.ConditionalScoreNet.parameterised_score`) instead of ``F / sigma``.

Only ``l2`` changes the grid (by 2), so H and W must be even; any even size works (the
dilated stages keep the grid, the fusion resizes bilinearly).
"""

from __future__ import annotations

import torch
from torch import nn

from invdiff.errors import ConfigError
from invdiff.scorenet import ConditionalScoreNet, FourierEmbedding, check_output
from invdiff_refinenet.layers import ACT, InstanceNormPlus, RefineBlock, ResidualBlock, conv3x3

__all__ = ["ConditionalRefineNet"]


class Stage(nn.ModuleList):
    """Residual blocks run in turn, each given the noise embedding (None: unconditional)."""

    def forward(self, h: torch.Tensor, emb: torch.Tensor | None) -> torch.Tensor:
        for block in self:
            h = block(h, emb)
        return h


class ConditionalRefineNet(ConditionalScoreNet):
    """Conditional NCSNv2 RefineNet: ``s(x, y, sigma) = F([x, y_r]) / sigma``.

    x_shape, y_shape: ``(C, H, W)`` of one x and one y; H and W of x must be even.
    ngf: base width (64 in the paper: about 7.4 M parameters for Cx = Cy = 1).
    noise_conditional: condition the norms on sigma (NCSN's conditional InstanceNorm++;
    default; the paper's net: False).
    output: ``"edm"`` (default) or ``"ncsn"`` (the paper's ``F / sigma``; module docstring).
    channels_last, bf16: speed switches, see :class:`ConditionalScoreNet`.
    """

    def __init__(
        self,
        x_shape: tuple[int, int, int],
        y_shape: tuple[int, int, int],
        ngf: int = 64,
        noise_conditional: bool = True,
        output: str = "edm",
        channels_last: bool = False,
        bf16: bool = False,
    ) -> None:
        super().__init__(x_shape, y_shape, channels_last=channels_last, bf16=bf16)
        _, height, width = self.x_shape
        if height % 2 or width % 2:
            raise ConfigError(
                f"refinenet needs an even grid (it halves H and W once), got x_shape "
                f"{self.x_shape}: crop or pad x to an even H and W (e.g. multiples of 4)"
            )
        if ngf < 2:
            raise ConfigError(f"ngf = {ngf}: InstanceNorm++ needs at least 2 channels (ngf >= 2)")
        c = self.ngf = int(ngf)
        self.output = check_output(output)
        self.noise_conditional = bool(noise_conditional)
        e = 4 * c if self.noise_conditional else None
        self.embed = FourierEmbedding(e) if e else None
        self.begin = conv3x3(self.in_channels, c)
        self.stages = nn.ModuleList([
            Stage([ResidualBlock(c, c, emb_dim=e), ResidualBlock(c, c, emb_dim=e)]),
            Stage([ResidualBlock(c, 2 * c, down=True, emb_dim=e),
                   ResidualBlock(2 * c, 2 * c, emb_dim=e)]),
            *(Stage([ResidualBlock(2 * c, 2 * c, down=True, dilation=d, emb_dim=e),
                     ResidualBlock(2 * c, 2 * c, dilation=d, emb_dim=e)]) for d in (2, 4)),
        ])
        self.refines = nn.ModuleList([
            RefineBlock([2 * c], 2 * c),
            RefineBlock([2 * c, 2 * c], 2 * c),
            RefineBlock([2 * c, 2 * c], c),
            RefineBlock([c, c], c, end=True),
        ])
        self.head = nn.ModuleList([InstanceNormPlus(c, emb_dim=e), ACT(),
                                   conv3x3(c, self.out_channels)])
        if self.channels_last:
            self.to(memory_format=torch.channels_last)

    def body(self, h: torch.Tensor, *cond: torch.Tensor) -> torch.Tensor:
        """``[x_in, y_r] (B, Cx + Cy, H, W)`` (and ``c_noise (B,)`` if noise-conditional)
        ``-> F (B, Cx, H, W)``, before the output parameterisation."""
        emb = self.embed(cond[0]) if self.embed is not None else None
        layers = []
        h = self.begin(h)
        for stage in self.stages:
            h = stage(h, emb)
            layers.append(h)
        # Refine from the coarsest stage up, fusing each skip with the previous refinement.
        ref = self.refines[0]([layers[-1]])
        for refine, skip in zip(self.refines[1:], reversed(layers[:-1]), strict=True):
            ref = refine([skip, ref])
        norm, act, conv = self.head
        return conv(act(norm(ref, emb)))

    def score(self, x: torch.Tensor, y: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """``F([x, y_r]) / sigma`` (or the EDM form) with ``sigma (B, 1, 1, 1)``."""
        cond = (sigma.flatten().log() / 4,) if self.noise_conditional else ()
        return self.parameterised_score(x, y, sigma, self.output, *cond)

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, ngf={self.ngf}, "
                f"noise_conditional={self.noise_conditional}, output={self.output!r}")
