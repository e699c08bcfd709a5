"""An exponential moving average of a network's weights (what sampling uses)."""

from __future__ import annotations

import copy

import torch

__all__ = ["EMA"]


class EMA:
    """Exponential moving average of a module's parameters: after optimiser step t (0-based)
    ``e <- d_t e + (1 - d_t) theta`` (``e_0 = theta_0``); buffers are copied as they are.

    With ``warmup`` the decay ramps up as ``d_t = min(decay, (1 + t) / (10 + t))`` (the
    TensorFlow ``num_updates`` rule): a plain 0.999 average still gives the random initial
    weights 37% weight after 1000 steps, which ruined short CPU runs (measured: validation loss
    45 with the EMA against 14.5 with the raw weights after 1000 steps). Without warm-up,
    ``d_t = decay``.

    :attr:`module` is a frozen copy of the network holding the averages (what sampling uses).
    """

    def __init__(self, net: torch.nn.Module, decay: float, warmup: bool = True) -> None:
        self.decay = float(decay)
        self.warmup = bool(warmup)
        self.module = copy.deepcopy(net).eval().requires_grad_(False)

    def decay_at(self, step: int) -> float:
        """d_t for 0-based optimiser step ``step``."""
        if not self.warmup:
            return self.decay
        return min(self.decay, (1.0 + step) / (10.0 + step))

    @torch.no_grad()
    def update(self, net: torch.nn.Module, step: int) -> None:
        d = self.decay_at(step)
        ema_p = list(self.module.parameters())
        torch._foreach_mul_(ema_p, d)
        torch._foreach_add_(ema_p, [p.detach() for p in net.parameters()], alpha=1 - d)
        for eb, b in zip(self.module.buffers(), net.buffers(), strict=True):
            eb.copy_(b)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.module.state_dict()
