"""The components themselves."""

from __future__ import annotations

import torch

from invdiff.checks import generator_device
from invdiff.interfaces import ForwardModel, NoiseModel, Prior
from invdiff.sampling import Chains, LadderSampler


class DiscPrior(Prior):
    """x = background * (1 + (c - 1) 1[|p - centre| < r]) on an n x n grid of the unit square,
    centre ~ U[r, 1 - r]^2 per axis, r ~ U(radius), c ~ U(contrast)."""

    def __init__(self, n=16, background=1.0, contrast=(2.0, 4.0), radius=(0.1, 0.3)):
        self.n, self.background = n, background
        self.contrast, self.radius = contrast, radius

    @property
    def shape(self):
        return (1, self.n, self.n)

    def sample(self, n, generator=None, device=None):
        dev = generator_device(generator, device)
        u = torch.rand(n, 4, generator=generator, device=dev)
        r = self.radius[0] + (self.radius[1] - self.radius[0]) * u[:, 0]
        c = self.contrast[0] + (self.contrast[1] - self.contrast[0]) * u[:, 1]
        cx = r + (1 - 2 * r) * u[:, 2]
        cy = r + (1 - 2 * r) * u[:, 3]
        t = (torch.arange(self.n, device=dev) + 0.5) / self.n
        px, py = t[None, None, :], (1 - t)[None, :, None]  # row 0 is the top (y = 1)
        d2 = (px - cx[:, None, None]) ** 2 + (py - cy[:, None, None]) ** 2
        inside = d2 < r[:, None, None] ** 2
        x = self.background * (1 + (c[:, None, None] - 1) * inside)
        return x[:, None]


class LaplaceNoise(NoiseModel):
    """y = y_clean + e, e_i ~ Laplace(0, b) iid (inverse-CDF sampling from one uniform)."""

    def __init__(self, scale=0.01):
        self.scale = scale

    def __call__(self, y_clean, generator=None):
        dev = generator.device if generator is not None else y_clean.device
        u = torch.rand(y_clean.shape, generator=generator, device=dev, dtype=y_clean.dtype) - 0.5
        u = u.clamp(-0.5 + 1e-7, 0.5 - 1e-7)
        e = -self.scale * torch.sign(u) * torch.log1p(-2 * u.abs())
        return y_clean + e.to(y_clean.device)


class BoxBlur(ForwardModel):
    """y = mean of each k x k block of x: a linear, noise-free measurement at 1/k resolution.
    Shapes: x (B, C, H, W) -> y (B, C, H / k, W / k); H and W must be multiples of k."""

    def __init__(self, factor=2):
        self.factor = factor

    def __call__(self, x):
        return torch.nn.functional.avg_pool2d(x, self.factor)

    def output_shape(self, x_shape):
        c, h, w = x_shape
        return (c, h // self.factor, w // self.factor)


class ProbabilityFlowEuler(LadderSampler):
    """Euler steps of the probability-flow ODE of the variance-exploding diffusion
    (Song et al. 2021, eq. 13; Karras et al. 2022, eq. 4): dx / dsigma = -sigma s(x, y, sigma),
    so from sigma_i to sigma_(i+1): x <- x + (sigma_i - sigma_(i+1)) sigma_i s(x, y, sigma_i).
    Deterministic after the Gaussian start; one score evaluation per level. The loop (batching,
    seeding, nfe, divergence checks, final denoising) is the core's LadderSampler."""

    name = "example-euler"

    def nfe_per_chain(self, n_levels):
        return n_levels + int(self.final_denoise)

    def level(self, chains: Chains, i: int) -> None:
        sigma, nxt = chains.sigma(i), chains.sigma(i + 1)
        chains.move(chains.x + (sigma - nxt) * sigma * chains.score(sigma), "Euler step")
