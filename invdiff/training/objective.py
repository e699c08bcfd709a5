"""The denoising score matching (DSM) objective of a conditional score network.

Loss (Dasgupta et al. 2025, Eq. 15; NCSNv2's sigma^2-weighted objective). For a pair (x, y)
draw a level sigma uniformly from the ladder sigma_1 > ... > sigma_L (or, with
``sigma_sampling = "log-normal"``, ln sigma ~ N(m, s^2) clamped to [sigma_L, sigma_1], which
weights the scales of the posterior over the large levels) and z ~ N(0, I); with
x~ = x + sigma z the DSM target is grad_x~ log N(x~; x, sigma^2 I) = -z / sigma, so

    l(x, y, sigma, z) = 1/2 || sigma s(x~, y, sigma) + z ||^2       (sum over all pixels)
    L(theta)          = E_{x, y, sigma, z} l                        (mean over the batch).

With ``loss_weighting = "edm"`` each term is multiplied by 1 + sigma^2 (:func:`loss_weight`),
which keeps the large levels in the gradient; the default ``"auto"`` picks it for nets with the
EDM output parameterisation (``net.output == "edm"``, the U-Net's default) and the sigma^2
weighting otherwise (:func:`resolve_loss_weighting`). Either way, its minimiser is the noised
posterior score grad log p_sigma(x~ | y), and for that score the expected loss is not zero:
for a Gaussian posterior N(m, S) with eigenvalues lambda_i it is
w(sigma)/2 sum_i lambda_i / (lambda_i + sigma^2) (the tests check this).
"""

from __future__ import annotations

from typing import Any

import torch

from invdiff.checks import randn
from invdiff.errors import ConfigError, DataError
from invdiff.interfaces import Objective, ScoreFn
from invdiff.sampling.sigmas import check_ladder
from invdiff.training.config import LossWeighting

__all__ = ["DenoisingScoreMatching", "loss_weight", "resolve_loss_weighting", "dsm_terms",
           "draw_dsm", "dsm_loss"]


def loss_weight(sigma: torch.Tensor, weighting: LossWeighting = "sigma2") -> torch.Tensor:
    """The factor w(sigma) ``(B,)`` on each example's sigma^2-weighted DSM term.

    With the denoiser D = x~ + sigma^2 s the term is 1/2 ||D - x||^2 / sigma^2: the NCSN
    weighting ("sigma2", w = 1) counts an error in D at sigma = 60 3600 times less than at
    sigma = 1, so the large levels, whose minimiser D = E[x | y] is the measurement's whole
    contribution, barely enter the gradient. "edm" uses w = 1 + sigma^2 / sigma_data^2
    (sigma_data = 1, the data being normalised), i.e. Karras et al. (2022)'s
    lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2 on ||D - x||^2, which gives
    every level's term the same order of magnitude.
    """
    if weighting == "sigma2":
        return torch.ones_like(sigma)
    if weighting == "edm":
        return 1 + sigma.square()
    raise ConfigError(f"unknown loss weighting {weighting!r}; use 'sigma2' or 'edm' (resolve "
                      f"'auto' for a net with resolve_loss_weighting)")


def resolve_loss_weighting(weighting: str, net: Any) -> LossWeighting:
    """The weighting ``"auto"`` stands for with ``net``: ``"edm"`` when the net forms its score
    with the EDM preconditioning (``net.output == "edm"``: its regression target has unit
    variance at every level, and only the EDM weighting lets every level count alike), else
    ``"sigma2"`` (an ``"ncsn"`` net's F regression already has unit weight under it; "edm"
    would weight the top levels up to 1 + sigma_1^2 times). Other values are returned as they
    are. Measured on the learning curves (docs/results/learning-curves/)."""
    if weighting != "auto":
        return weighting  # type: ignore[return-value]
    return "edm" if getattr(net, "output", None) == "edm" else "sigma2"


def dsm_terms(
    score: ScoreFn, x: torch.Tensor, y: torch.Tensor, sigma: torch.Tensor, z: torch.Tensor,
    weighting: LossWeighting = "sigma2",
) -> torch.Tensor:
    """Per-example DSM loss ``w(sigma)/2 || sigma s(x + sigma z, y, sigma) + z ||^2``: ``(B,)``
    (w from :func:`loss_weight`; 1 by default).

    x, z: ``(B, *x_shape)``; y: ``(B, *y_shape)``; sigma: ``(B,)``. Summed over pixels in
    x's dtype, at least float32 (also under bf16 autocast).
    """
    s = sigma.reshape(-1, *([1] * (x.dim() - 1))).to(x.dtype)
    out = score(x + s * z, y, sigma)
    acc = torch.promote_types(x.dtype, torch.float32)  # bf16 outputs are summed in float32
    terms = 0.5 * (s.to(acc) * out.to(acc) + z.to(acc)).flatten(1).square().sum(1)
    return terms * loss_weight(sigma.to(acc), weighting)


def draw_dsm(
    x: torch.Tensor,
    sigmas: torch.Tensor,
    generator: torch.Generator | None,
    log_normal: tuple[float, float] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One level per example and z ~ N(0, I) like x.

    Levels are uniform over the ladder, or with ``log_normal = (m, s)`` continuous,
    ``ln sigma ~ N(m, s^2)`` clamped to ``[sigma_L, sigma_1]`` (Karras et al. 2022): this spends
    the training on the scales where the posterior's structure lives instead of on the many
    large levels, whose score is close to the trivial ``-(x~ - mean) / sigma^2``.
    """
    dev = generator.device if generator is not None else x.device
    if log_normal is None:
        idx = torch.randint(sigmas.numel(), (x.shape[0],), generator=generator, device=dev)
        sigma = sigmas.to(dev)[idx]
    else:
        m, s = log_normal
        ln = m + s * torch.randn(x.shape[0], generator=generator, device=dev,
                                 dtype=sigmas.dtype)
        ends = sigmas.to(dev)  # decreasing (check_ladder): tensor bounds, no host sync
        sigma = ln.exp().clamp(ends[-1], ends[0])
    return sigma.to(device=x.device, dtype=x.dtype), randn(x.shape, generator, x)


def dsm_loss(
    score_net: ScoreFn,
    x: torch.Tensor,
    y: torch.Tensor,
    sigmas: torch.Tensor,
    generator: torch.Generator | None = None,
    log_normal: tuple[float, float] | None = None,
    weighting: LossWeighting = "sigma2",
) -> torch.Tensor:
    """The DSM loss (scalar) of a batch, as in the module docstring (sigma^2-weighted, or
    ``weighting = "edm"``, :func:`loss_weight`).

    x: ``(B, *x_shape)``, y: ``(B, *y_shape)`` (normalised units), sigmas: decreasing ``(L,)``.
    Levels and noise are drawn from ``generator`` (its device; the global RNG if None):
    uniform over the ladder, or log-normal with ``log_normal = (mean, std)`` of ln sigma.
    """
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor) or x.dim() < 2:
        raise DataError("dsm_loss needs tensors x (B, *x_shape) and y (B, *y_shape)")
    if y.dim() < 2 or y.shape[0] != x.shape[0]:
        raise DataError(
            f"x has batch {x.shape[0]} but y has shape {tuple(y.shape)}; give one y per x"
        )
    sigmas = check_ladder(torch.as_tensor(sigmas, dtype=x.dtype))
    sigma, z = draw_dsm(x, sigmas, generator, log_normal)
    return dsm_terms(score_net, x, y, sigma, z, weighting).mean()


class DenoisingScoreMatching(Objective):
    """The built-in objective ``"dsm"``: the DSM loss of the module docstring, with the run's
    ``training.loss_weighting`` (``"auto"`` resolved for the net) and level draws
    (``training.sigma_sampling``: uniform over the ladder, or log-normal)."""

    name = "dsm"

    def __init__(self) -> None:
        self._weighting: LossWeighting = "sigma2"
        self._log_normal: tuple[float, float] | None = None

    def prepare(self, net: Any, config: Any) -> None:
        self._weighting = resolve_loss_weighting(config.loss_weighting, net)
        self._log_normal = ((config.sigma_log_mean, config.sigma_log_std)
                            if config.sigma_sampling == "log-normal" else None)

    @property
    def weighting(self) -> str:
        return self._weighting

    def draw(self, x: torch.Tensor, sigmas: torch.Tensor, generator: torch.Generator | None
             ) -> tuple[torch.Tensor, torch.Tensor]:
        return draw_dsm(x, sigmas, generator, self._log_normal)

    def terms(self, net: Any, x: torch.Tensor, y: torch.Tensor, sigma: torch.Tensor,
              z: torch.Tensor) -> torch.Tensor:
        return dsm_terms(net, x, y, sigma, z, self._weighting)
