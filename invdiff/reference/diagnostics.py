r"""Accuracy of samples against a Gaussian posterior N(m_y, S) (the reference problem's).

Used by the sampler tests and ``benchmarks/bench_samplers.py``. What a ladder sampler can reach
at best is not N(m, S) itself but the law it ends at (S = U diag(lambda) U^T):

* chains at noise sigma (no final denoising): N(m, S + sigma^2 I), eigenvalues lambda + sigma^2;
* then Tweedie's step x + sigma^2 s(x, sigma): N(m, S (S + sigma^2 I)^-1 S), eigenvalues
  lambda^2 / (lambda + sigma^2);
* sigma = 0 (a predictor run down to 0): N(m, S).

Metrics (x flattened to D pixels; M measurements, n samples each):

* ``mean_error``: RMS over pixels and measurements of (sample mean - m) / exact std;
* ``std_ratio``: ``(D,)`` sample std / target std, the sample variance pooled over the M
  measurements (S does not depend on y) with n - 1 per measurement;
* ``w2``: Gaussian 2-Wasserstein distance between N(sample mean, sample cov) and N(m, target),
  averaged over measurements:
  W2^2 = |m1 - m2|^2 + tr(C1 + C2 - 2 (C2^1/2 C1 C2^1/2)^1/2).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def target_cov(cov: torch.Tensor, sigma: float, denoised: bool) -> torch.Tensor:
    """The covariance ``(D, D)`` a sampler ending at noise ``sigma`` aims at (see module)."""
    evals, evecs = torch.linalg.eigh(cov.double())
    evals = evals.clamp_min(0)
    s2 = float(sigma) ** 2
    f = evals.square() / (evals + s2).clamp_min(1e-300) if denoised else evals + s2
    return (evecs * f) @ evecs.T


def _sqrtm_psd(c: torch.Tensor) -> torch.Tensor:
    evals, evecs = torch.linalg.eigh(0.5 * (c + c.T))
    return (evecs * evals.clamp_min(0).sqrt()) @ evecs.T


def gaussian_w2(m1: torch.Tensor, c1: torch.Tensor, m2: torch.Tensor, c2: torch.Tensor) -> float:
    """2-Wasserstein distance between N(m1, c1) and N(m2, c2) (all float64, flattened)."""
    r2 = _sqrtm_psd(c2)
    cross = _sqrtm_psd(r2 @ c1 @ r2)
    w2sq = (m1 - m2).square().sum() + torch.trace(c1 + c2 - 2 * cross)
    return float(w2sq.clamp_min(0).sqrt())


@dataclass
class Accuracy:
    """Sample accuracy against a Gaussian target (see module docstring)."""

    mean_error: float
    std_ratio: torch.Tensor
    w2: float

    @property
    def max_std_error(self) -> float:
        """max over pixels of |std ratio - 1|."""
        return float((self.std_ratio - 1).abs().max())

    @property
    def mean_std_ratio(self) -> float:
        return float(self.std_ratio.mean())


def gaussian_accuracy(samples: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor,
                      target: torch.Tensor | None = None) -> Accuracy:
    """Compare ``samples (M, n, *x_shape)`` with N(``mean (M, *x_shape)``, ``target``).

    ``cov``: the exact posterior covariance S ``(D, D)`` (scales the mean error);
    ``target``: the covariance the sampler aims at (default S; see :func:`target_cov`).
    """
    target = cov if target is None else target
    m_count, n = samples.shape[:2]
    x = samples.double().reshape(m_count, n, -1).cpu()
    m = mean.double().reshape(m_count, -1).cpu()
    std = cov.double().diagonal().sqrt()
    mean_error = float(((x.mean(1) - m) / std).square().mean().sqrt())
    centred = x - x.mean(1, keepdim=True)
    covs = centred.transpose(1, 2) @ centred / (n - 1)  # (M, D, D)
    var = covs.diagonal(dim1=1, dim2=2).mean(0)
    std_ratio = var.sqrt() / target.double().diagonal().sqrt()
    w2 = sum(gaussian_w2(x[k].mean(0), covs[k], m[k], target.double())
             for k in range(m_count)) / m_count
    return Accuracy(mean_error, std_ratio, w2)


#: Two reference setups for sampler tests: 8x8 blur with half the pixels masked, and 10x10
#: blur observed on every second pixel in each direction (subsampled, no mask).
REFERENCE_PROBLEMS: dict[str, dict[str, object]] = {
    "blur-mask-8": dict(n=8, mask_fraction=0.5),
    "subsample-10": dict(n=10, mask_fraction=1.0, subsample=2),
}


def reference_case(n_measurements: int = 2, seed: int = 0, **problem: object):
    """A reference problem (``invdiff.reference.make_problem(**problem)``) and measurements
    ``y (n_measurements, *y_shape)`` of prior draws, seeded: returns ``(problem, y)``."""
    from invdiff.reference import make_problem

    prob = make_problem(**problem)
    g = torch.Generator().manual_seed(seed)
    x = prob.prior.sample(n_measurements, generator=g)
    return prob, prob.noise_model(prob.forward_model(x), generator=g)


class IsotropicScore:
    """Exact noised score of N(0, v I) on ``x_shape``: s(x, sigma) = -x / (v + sigma^2).

    Every direction is then one independent 1-D Gaussian, so a sampler's output variance can
    be checked against the closed-form recursion of its steps. y is ignored (shape ``(1,)``).
    """

    y_shape = (1,)

    def __init__(self, v: float, x_shape: tuple[int, ...] = (1, 4, 4)) -> None:
        self.v, self.x_shape = v, tuple(x_shape)

    def __call__(self, x: torch.Tensor, y: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return -x / (self.v + sigma.reshape(-1, *([1] * (x.dim() - 1))) ** 2)
