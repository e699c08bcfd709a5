"""Test kit for score nets built on :class:`invdiff.scorenet.ConditionalScoreNet`.

* :func:`check_input_errors`: wrong shapes raise :class:`invdiff.errors.DataError`.
* :func:`check_switches`: ``bf16`` and ``channels_last`` keep the output's dtype, layout and
  (up to bf16 rounding) its values.
* :class:`GaussianToy` and :func:`train_dsm`: a problem with a closed-form noised posterior
  score, and a minimal denoising-score-matching loop, to show that a small net learns the score.

The toy: every pixel is independent, ``x ~ N(0, 1)`` and ``y = x + s_y e`` with ``e ~ N(0, 1)``,
so ``p(x | y) = N(m, v)`` with ``m = y / (1 + s_y^2)`` and ``v = s_y^2 / (1 + s_y^2)``, and the
noised posterior ``p_sigma(x | y) = N(m, v + sigma^2)`` has the exact score
``-(x - m) / (v + sigma^2)``.
"""

from __future__ import annotations

import math
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass

import torch

from invdiff.errors import DataError

__all__ = [
    "GaussianToy",
    "check_imports_torch_free",
    "check_input_errors",
    "check_switches",
    "learned_error_ratios",
    "train_dsm",
]


def check_input_errors(net: torch.nn.Module) -> None:
    """x, y or sigma of the wrong shape, or mismatched batch sizes, raise DataError."""
    cx, h, w = net.x_shape
    x, y = torch.zeros(2, *net.x_shape), torch.zeros(2, *net.y_shape)
    sigma = torch.ones(2)
    bad_calls = {
        "x_shape": (torch.zeros(2, cx + 1, h, w), y, sigma),
        "x_grid": (torch.zeros(2, cx, h + 2, w), y, sigma),
        "single_x": (x[0], y, sigma),
        "y_shape": (x, torch.zeros(2, net.y_shape[0] + 1, *net.y_shape[1:]), sigma),
        "batch": (x, y[:1], sigma),
        "sigma": (x, y, torch.ones(3)),
        "sigma_2d": (x, y, torch.ones(2, 1)),
    }
    for what, args in bad_calls.items():
        try:
            net(*args)
        except DataError as exc:
            assert "shape" in str(exc) or "batch" in str(exc), f"{what}: unclear message {exc}"
        else:
            raise AssertionError(f"{what}: wrong input was accepted without a DataError")


def check_switches(make_net: Callable[..., torch.nn.Module], rtol_bf16: float = 0.05) -> None:
    """``make_net(channels_last=..., bf16=...)`` built from the same seed agree with the plain
    float32 net: channels_last to float32 round-off, bf16 to ``rtol_bf16`` in relative L2 norm
    (bf16 keeps 8 bits of mantissa, about 0.4 % per operation); outputs stay float32 and in
    the default contiguous layout."""
    nets = {}
    for key in ((False, False), (True, False), (False, True)):
        torch.manual_seed(0)
        nets[key] = make_net(channels_last=key[0], bf16=key[1]).eval()
    base = nets[(False, False)]
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, *base.x_shape, generator=g)
    y = torch.randn(2, *base.y_shape, generator=g)
    sigma = torch.tensor([0.5, 1.5])
    with torch.no_grad():
        ref = base(x, y, sigma)
        for (cl, bf), net in nets.items():
            out = net(x, y, sigma)
            assert out.dtype == torch.float32 and out.is_contiguous()
            rel = float((out - ref).norm() / ref.norm())
            assert rel < (rtol_bf16 if bf else 1e-5), f"channels_last={cl} bf16={bf}: rel {rel}"
            if bf:
                assert rel > 0, "bf16 gave bit-identical float32 output: autocast is not active"


@dataclass
class GaussianToy:
    """Independent pixels, ``x ~ N(0, 1)``, ``y = x + s_y e``; see the module docstring."""

    shape: tuple[int, int, int] = (1, 16, 16)
    s_y: float = 0.5
    sigma_min: float = 0.05
    sigma_max: float = 2.0

    def draw(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
        """``x0, y, sigma, z`` for n examples: sigma log-uniform on [sigma_min, sigma_max]."""
        x0 = torch.randn(n, *self.shape, generator=generator)
        y = x0 + self.s_y * torch.randn(n, *self.shape, generator=generator)
        u = torch.rand(n, generator=generator)
        sigma = self.sigma_min * (self.sigma_max / self.sigma_min) ** u
        z = torch.randn(n, *self.shape, generator=generator)
        return x0, y, sigma, z

    def score(self, x: torch.Tensor, y: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """Exact ``grad_x log p_sigma(x | y) = -(x - m(y)) / (v + sigma^2)``."""
        v = self.s_y**2 / (1 + self.s_y**2)
        m = y / (1 + self.s_y**2)
        return -(x - m) / (v + sigma.view(-1, 1, 1, 1) ** 2)

    def error(self, score: Callable, n: int = 256, seed: int = 123,
              device: torch.device | str = "cpu") -> float:
        """``E[sigma^2 |s - s*|^2] / D`` on fresh draws: the sigma^2 weighting makes every noise
        level count alike (the zero function scores ``E[sigma^2 / (v + sigma^2)]``). ``score``
        is called on ``device`` (the draws are the same on every device)."""
        g = torch.Generator().manual_seed(seed)
        x0, y, sigma, z = self.draw(n, g)
        x = x0 + sigma.view(-1, 1, 1, 1) * z
        with torch.no_grad():
            s = score(x.to(device), y.to(device), sigma.to(device)).cpu()
            diff = s - self.score(x, y, sigma)
        return float((sigma.view(-1, 1, 1, 1) ** 2 * diff.square()).mean())


def check_imports_torch_free(*modules: str) -> None:
    """Importing ``modules`` in a fresh interpreter must not import torch (``invdiff plugins``
    stays fast however many plugins are installed)."""
    code = f"import sys, {', '.join(modules)}; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", f"importing {modules} imports torch: {out.stderr}"


def learned_error_ratios(
    net: torch.nn.Module, toy: GaussianToy, steps: int, batch: int, lr: float
) -> tuple[float, float]:
    """Train ``net`` with :func:`train_dsm`; return its :meth:`GaussianToy.error` divided by
    that of the zero function and by that of the prior score ``-x / (1 + sigma^2)`` (which
    ignores y: beating it shows the net uses y). Trains and evaluates on the net's device."""
    zero = toy.error(lambda x, y, s: torch.zeros_like(x))
    prior = toy.error(lambda x, y, s: -x / (1 + s.view(-1, 1, 1, 1) ** 2))
    train_dsm(net, toy, steps=steps, batch=batch, lr=lr)
    err = toy.error(net, device=next(net.parameters()).device)
    return err / zero, err / prior


def train_dsm(
    net: torch.nn.Module, toy: GaussianToy, steps: int, batch: int = 32, lr: float = 2e-3,
    seed: int = 0,
) -> list[float]:
    """Minimal DSM loop: minimise ``E |sigma s(x0 + sigma z, y, sigma) + z|^2`` with Adam
    (cosine-decayed learning rate), on the net's device (the draws are the same on every
    device). Returns the loss per step."""
    dev = next(net.parameters()).device
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    losses = []
    net.train()
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
        x0, y, sigma, z = (t.to(dev) for t in toy.draw(batch, g))
        s4 = sigma.view(-1, 1, 1, 1)
        loss = (s4 * net(x0 + s4 * z, y, sigma) + z).square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    net.eval()
    return losses
