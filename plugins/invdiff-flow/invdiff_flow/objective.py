r"""Conditional flow matching with a linear interpolant, on any registered score net.

The path (Lipman et al. 2023; Liu et al. 2023): for a pair (x, y), noise
:math:`z \sim \mathcal N(0, I)` and a time :math:`t \in (0, 1)`,

.. math::  x_t = (1 - t)\, x + t\, z, \qquad v = \frac{d x_t}{dt} = z - x,

and the network regresses the velocity: :math:`L = E\, \lVert v_\theta(x_t, y, t) - (z - x)
\rVert^2` (summed over pixels, mean over the batch); its minimiser is
:math:`E[z - x \mid x_t, y]`.

**The same model as score matching.** :math:`\tilde x = x_t / (1 - t) = x + \sigma z` with
:math:`\sigma = t / (1 - t)` is the variance-exploding state of the score-matching models, so
the backbone is any score net :math:`s_\theta(\tilde x, y, \sigma)`, read as it always is, as
the score of :math:`p_\sigma(\tilde x \mid y)`, with denoiser :math:`D = \tilde x + \sigma^2 s`.
Tweedie's formula gives :math:`E[x \mid \tilde x] = D` and :math:`E[z \mid \tilde x] =
(\tilde x - D) / \sigma`, hence the velocity the net stands for,

.. math::  v_\theta = \frac{\tilde x - D_\theta}{\sigma} - D_\theta
           = -(\sigma + \sigma^2)\, s_\theta - \tilde x,

and :math:`v_\theta - v = -(1 + \sigma)(\sigma s_\theta + z)`: flow matching is denoising score
matching with the weight :math:`(1 + \sigma)^2` and the levels of uniform t (Kingma & Gao 2023).
The trained model is an ordinary :class:`~invdiff.training.ScoreModel`, so every sampler
(annealed Langevin, predictor-corrector, heun, dpm-2m) samples it, and the probability-flow ODE
of the VE process is the flow's ODE in other coordinates.

**Times.** t is drawn on the range the ladder covers, :math:`[t_L, t_1]` with
:math:`t_i = \sigma_i / (1 + \sigma_i)`: uniformly (the classic choice), or logit-normal
(``time_sampling = "logit-normal"``, Esser et al. 2024), clamped to the same range.
"""

from __future__ import annotations

from typing import Any

import torch

from invdiff.checks import randn
from invdiff.interfaces import Objective

__all__ = ["FlowMatching"]


class FlowMatching(Objective):
    """The objective ``"flow-matching"`` (module docstring)."""

    name = "flow-matching"

    def __init__(self, time_sampling: str = "uniform", logit_mean: float = 0.0,
                 logit_std: float = 1.0) -> None:
        self.time_sampling, self.logit_mean, self.logit_std = (time_sampling, logit_mean,
                                                               logit_std)

    @property
    def weighting(self) -> str:
        return f"flow-matching ({self.time_sampling} t)"

    def draw(self, x: torch.Tensor, sigmas: torch.Tensor, generator: torch.Generator | None
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """sigma = t / (1 - t) for t drawn on the ladder's range, and z like x."""
        dev = generator.device if generator is not None else x.device
        ends = sigmas.to(dev, torch.float64)
        t_lo, t_hi = ends[-1] / (1 + ends[-1]), ends[0] / (1 + ends[0])
        if self.time_sampling == "uniform":
            u = torch.rand(x.shape[0], generator=generator, device=dev, dtype=torch.float64)
            t = t_lo + (t_hi - t_lo) * u
        else:
            g = torch.randn(x.shape[0], generator=generator, device=dev, dtype=torch.float64)
            t = torch.sigmoid(self.logit_mean + self.logit_std * g).clamp(t_lo, t_hi)
        sigma = (t / (1 - t)).clamp(ends[-1], ends[0])
        return sigma.to(device=x.device, dtype=x.dtype), randn(x.shape, generator, x)

    def terms(self, net: Any, x: torch.Tensor, y: torch.Tensor, sigma: torch.Tensor,
              z: torch.Tensor) -> torch.Tensor:
        """``|| v_theta - (z - x) ||^2`` per example ``(B,)`` at the VE states x + sigma z."""
        s = sigma.reshape(-1, *([1] * (x.dim() - 1))).to(x.dtype)
        x_ve = x + s * z
        acc = torch.promote_types(x.dtype, torch.float32)  # bf16 outputs summed in float32
        score = net(x_ve, y, sigma).to(acc)
        s, x_ve = s.to(acc), x_ve.to(acc)
        v_pred = -(s + s.square()) * score - x_ve
        return (v_pred - (z.to(acc) - x.to(acc))).flatten(1).square().sum(1)
