"""Noise ladders: geometric sequences sigma_1 > ... > sigma_L and the NCSNv2 heuristics.

Song & Ermon (2020, "Improved techniques for training score-based generative models"):

* Technique 1: sigma_1 as large as the largest pairwise Euclidean distance between training
  points, so that Langevin dynamics can move between modes.
* Technique 2: a geometric ladder with ratio gamma = sigma_{i-1}/sigma_i chosen such that
  Phi(sqrt(2D)(gamma - 1) + 3 gamma) - Phi(sqrt(2D)(gamma - 1) - 3 gamma) ~ 0.5, D the data
  dimension: consecutive noise shells then overlap enough.
* Technique 4: for T Langevin steps per level with step a_i = eps sigma_i^2 / sigma_L^2, pick
  eps such that, with u = 1 - eps / sigma_L^2,
      f(eps) = u^{2T} (gamma^2 - 2 eps / (sigma_L^2 - sigma_L^2 u^2))
               + 2 eps / (sigma_L^2 - sigma_L^2 u^2)  ~ 1,
  i.e. the sample variance at the end of each level matches sigma_i^2 (f has a minimum
  slightly above 1, so eps minimises |f - 1|).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from invdiff.checks import check_finite
from invdiff.errors import ConfigError
from invdiff.params import DEFAULT_STEPS_PER_LEVEL


def geometric(sigma_1: float, sigma_L: float, n_levels: int) -> torch.Tensor:
    """Geometric ladder ``(n_levels,)`` from ``sigma_1`` down to ``sigma_L`` (float32)."""
    if not (sigma_1 > sigma_L > 0):
        raise ConfigError(f"need sigma_1 > sigma_L > 0, got {sigma_1} and {sigma_L}")
    if n_levels < 2:
        raise ConfigError(f"a ladder needs at least 2 levels, got {n_levels}")
    return torch.logspace(math.log10(sigma_1), math.log10(sigma_L), n_levels, dtype=torch.float64
                          ).float()


def check_ladder(sigmas: torch.Tensor) -> torch.Tensor:
    """Validate a ladder: 1-D, finite, positive, strictly decreasing."""
    if not isinstance(sigmas, torch.Tensor):
        sigmas = torch.as_tensor(sigmas, dtype=torch.float32)
    if sigmas.dim() != 1 or sigmas.numel() < 1:
        raise ConfigError(f"sigmas must be a non-empty 1-D tensor, got shape {tuple(sigmas.shape)}")
    if not bool(torch.isfinite(sigmas).all()) or bool((sigmas <= 0).any()):
        raise ConfigError("sigmas must be finite and positive")
    if sigmas.numel() > 1 and not bool((sigmas[1:] < sigmas[:-1]).all()):
        raise ConfigError("sigmas must be strictly decreasing (sigma_1 > ... > sigma_L)")
    return sigmas


def _phi(z: float) -> float:
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


def overlap(gamma: float, dim: int) -> float:
    """Technique 2's overlap measure for ratio ``gamma`` in dimension ``dim``."""
    c = math.sqrt(2.0 * dim) * (gamma - 1.0)
    return _phi(c + 3.0 * gamma) - _phi(c - 3.0 * gamma)


def ratio_for_dim(dim: int, target: float = 0.5) -> float:
    """The ratio gamma > 1 with ``overlap(gamma, dim) = target`` (bisection; overlap decreases
    in gamma)."""
    lo, hi = 1.0 + 1e-9, 10.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if overlap(mid, dim) > target:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def _f_eps(eps: float, gamma: float, sigma_L: float, steps: int) -> float:
    s2 = sigma_L**2
    u = 1.0 - eps / s2
    b = 2.0 * eps / (s2 - s2 * u * u)
    return u ** (2 * steps) * (gamma**2 - b) + b


def langevin_step_size(sigmas: torch.Tensor, steps_per_level: int) -> float:
    """Technique 4: the eps that brings f(eps) closest to 1 for this ladder and T steps.

    The ratio gamma is the ladder's mean ratio sigma_{i-1}/sigma_i. f starts at gamma^2 for
    eps -> 0, dips towards 1 and rises again, so we minimise |f - 1| over log eps on a dense
    grid and refine around the best point (this reproduces NCSNv2's eps = 6.2e-6 for CIFAR-10:
    sigma_1 = 50, sigma_L = 0.01, L = 232, T = 5).
    """
    sigmas = check_ladder(torch.as_tensor(sigmas))
    if steps_per_level < 1:
        raise ConfigError(f"steps_per_level must be >= 1, got {steps_per_level}")
    s = sigmas.double()
    sigma_L = float(s[-1])
    if s.numel() < 2:
        return 0.1 * sigma_L**2
    gamma = float((s[0] / s[-1]) ** (1.0 / (s.numel() - 1)))
    lo, hi = math.log(1e-12), math.log(0.999)  # eps / sigma_L^2
    for _ in range(3):  # grid, then two refinements around the best cell
        grid = [lo + (hi - lo) * k / 400 for k in range(401)]
        errs = [abs(_f_eps(math.exp(g) * sigma_L**2, gamma, sigma_L, steps_per_level) - 1)
                for g in grid]
        k = min(range(len(grid)), key=errs.__getitem__)
        lo, hi = grid[max(k - 1, 0)], grid[min(k + 1, len(grid) - 1)]
    return math.exp(grid[k]) * sigma_L**2


def max_pairwise_distance(x: torch.Tensor, max_points: int = 2000, seed: int = 0) -> float:
    """Largest Euclidean distance between rows of ``x (N, ...)`` (a random subset of at most
    ``max_points`` rows, which can only underestimate)."""
    flat = x.reshape(x.shape[0], -1).double()
    if flat.shape[0] > max_points:
        g = torch.Generator().manual_seed(seed)
        flat = flat[torch.randperm(flat.shape[0], generator=g)[:max_points]]
    best = 0.0
    for chunk in flat.split(512):
        best = max(best, float(torch.cdist(chunk, flat).max()))
    return best


@dataclass
class LadderSuggestion:
    """A ladder chosen by the NCSNv2 heuristics, with the reasoning that led to it."""

    sigma_1: float
    sigma_L: float
    n_levels: int
    gamma: float
    steps_per_level: int
    eps: float
    reasoning: list[str] = field(default_factory=list)

    def sigmas(self) -> torch.Tensor:
        return geometric(self.sigma_1, self.sigma_L, self.n_levels)

    def __str__(self) -> str:
        return "\n".join(self.reasoning)


def suggest(
    data: torch.Tensor | object,
    sigma_L: float = 0.01,
    steps_per_level: int = DEFAULT_STEPS_PER_LEVEL,
    max_levels: int = 2000,
) -> LadderSuggestion:
    """Suggest a ladder for training data ``x (N, *x_shape)`` (or a Dataset, whose x is
    normalised first with its stored statistics, as training sees it)."""
    x = data
    if hasattr(data, "normalization") and hasattr(data, "x"):
        x = data.normalization.normalize_x(data.x)
    if not isinstance(x, torch.Tensor) or x.dim() < 2 or x.shape[0] < 2:
        raise ConfigError("suggest needs at least 2 training samples x (N, *x_shape)")
    check_finite(x, "the training x (normalised)")
    dim = int(x[0].numel())
    sigma_1 = max_pairwise_distance(x)
    if sigma_1 <= sigma_L:
        raise ConfigError(
            f"largest pairwise distance {sigma_1:.3g} <= sigma_L {sigma_L}: data nearly constant?"
        )
    gamma = ratio_for_dim(dim)
    n_levels = min(max_levels, max(2, math.ceil(math.log(sigma_1 / sigma_L) / math.log(gamma)) + 1))
    sig = geometric(sigma_1, sigma_L, n_levels)
    eps = langevin_step_size(sig, steps_per_level)
    reasoning = [
        f"sigma_1 = {sigma_1:.4g}: largest pairwise distance of {x.shape[0]} training x "
        f"(NCSNv2 technique 1)",
        f"sigma_L = {sigma_L:.4g}: given",
        f"gamma = {gamma:.5f}: overlap(gamma, D={dim}) = 0.5 (technique 2)",
        f"L = {n_levels}: ceil(log(sigma_1/sigma_L) / log(gamma)) + 1",
        f"eps = {eps:.3e}: step a_i = eps (sigma_i/sigma_L)^2 with T = {steps_per_level} steps "
        f"per level makes f(eps) = 1 (technique 4)",
    ]
    return LadderSuggestion(sigma_1, sigma_L, n_levels, gamma, steps_per_level, eps, reasoning)
