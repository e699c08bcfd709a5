r"""Calibration of posterior samples against held-out truths (pixelwise).

For M held-out pairs (x_m, y_m) with x_m drawn from the prior, and n posterior samples
x_m^(1..n) ~ q(x | y_m) per pair, every pixel j gives one calibration draw:

* expected coverage (:func:`invdiff.evaluation.metrics.coverage_curve`): for a level a, the
fraction of (m, j) whose truth lies in the central a-interval of the samples. A calibrated q gives a
  (the diagonal); a too narrow q gives less, a too wide one more.
* simulation-based calibration (Talts et al. 2018, arXiv 1804.06788): the rank
  r = #{i : x^(i) < x_true} in {0, ..., n}. If q is the true posterior, truth and samples are
  exchangeable draws of one distribution, so r is uniform on {0, ..., n}. A U-shaped histogram
  means too narrow, a hump too wide, a slope a biased mean.

Uniformity statistics: Pearson's chi-square over ``bins`` groups of consecutive ranks (expected
counts from the exact number of rank values in each group) with its p-value on bins - 1
degrees of freedom, and the discrete Kolmogorov-Smirnov distance
D = max_k |F_emp(k) - (k + 1) / (n + 1)|. Pixels of one field are correlated, so the p-value
treats dependent draws as independent: read it as a statistic (small = suspicious), not as a
test at face value.

TARP (Lemos et al. 2023, arXiv 2302.03026) tests the joint posterior of whole fields, not
pixels: for each pair draw a reference point r_m uniformly in the box spanned by all samples
(coordinates scaled to [0, 1]), and let f_m = fraction of samples closer to r_m than the truth
(Euclidean distance over all pixels). For the true posterior f_m is uniform, so the expected
coverage ECP(a) = mean_m 1[f_m < a] equals a; ``tarp_dev`` = max_a |ECP(a) - a|.

Shapes: samples ``(M, n, *x_shape)``, truth ``(M, *x_shape)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from invdiff.errors import DataError
from invdiff.evaluation.metrics import check_samples, coverage_curve


def sbc_ranks(samples: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Rank of each true pixel among its samples, ``(M, *x_shape)`` int64 in {0..n}."""
    check_samples(samples, truth)
    return (samples < truth.unsqueeze(1).to(samples)).sum(dim=1)


def _bin_of_rank(n_samples: int, bins: int) -> torch.Tensor:
    """Group index of each rank 0..n: consecutive ranks, as equal groups as possible."""
    if not 2 <= bins <= n_samples + 1:
        raise DataError(f"bins={bins} must lie in [2, n_samples + 1 = {n_samples + 1}]")
    return torch.arange(n_samples + 1) * bins // (n_samples + 1)


def rank_histogram(ranks: torch.Tensor, n_samples: int, bins: int
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Counts ``(bins,)`` of the ranks in groups of consecutive rank values, and the expected
    counts under uniformity (proportional to the number of rank values per group)."""
    group = _bin_of_rank(n_samples, bins)
    r = ranks.flatten().cpu().long()
    if bool(((r < 0) | (r > n_samples)).any()):
        raise DataError(f"ranks must lie in 0..{n_samples}")
    counts = torch.bincount(group[r], minlength=bins).double()
    expected = torch.bincount(group, minlength=bins).double() / (n_samples + 1) * r.numel()
    return counts, expected


def chi2_uniformity(ranks: torch.Tensor, n_samples: int, bins: int) -> tuple[float, float]:
    """Pearson's chi-square statistic of the rank histogram against uniform, and its p-value
    (chi-square with bins - 1 degrees of freedom)."""
    from scipy.stats import chi2

    counts, expected = rank_histogram(ranks, n_samples, bins)
    stat = float(((counts - expected) ** 2 / expected).sum())
    return stat, float(chi2.sf(stat, bins - 1))


def ks_uniformity(ranks: torch.Tensor, n_samples: int) -> float:
    """Discrete KS distance of the ranks from the uniform law on {0..n}."""
    r = ranks.flatten().cpu().long()
    ecdf = torch.bincount(r, minlength=n_samples + 1).double().cumsum(0) / r.numel()
    cdf = torch.arange(1, n_samples + 2, dtype=torch.float64) / (n_samples + 1)
    return float((ecdf - cdf).abs().max())


def tarp_coverage(samples: torch.Tensor, truth: torch.Tensor, levels: Sequence[float],
                  seed: int = 0) -> torch.Tensor:
    """TARP expected coverage ``(L,)`` at ``levels`` (module docstring); reference points from
    a generator seeded with ``seed``."""
    check_samples(samples, truth)
    s = samples.double().flatten(2).cpu()  # (M, n, D)
    t = truth.double().flatten(1).cpu()  # (M, D)
    lo, hi = s.amin(dim=(0, 1)), s.amax(dim=(0, 1))
    scale = (hi - lo).clamp_min(1e-12)
    s, t = (s - lo) / scale, (t - lo) / scale
    ref = torch.rand(t.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    closer = (s - ref[:, None]).norm(dim=-1) < (t - ref).norm(dim=-1)[:, None]  # (M, n)
    f = closer.double().mean(1)
    lv = torch.as_tensor(list(levels), dtype=torch.float64)
    return (f[None, :] < lv[:, None]).double().mean(1)


def calibration_summary(samples: torch.Tensor, truth: torch.Tensor, levels: Sequence[float],
                        bins: int) -> dict[str, object]:
    """Everything the study records for one (net, sampler) cell, as JSON-able values."""
    n = int(samples.shape[1])
    ranks = sbc_ranks(samples, truth)
    counts, expected = rank_histogram(ranks, n, min(bins, n + 1))
    stat, p = chi2_uniformity(ranks, n, min(bins, n + 1))
    tarp = tarp_coverage(samples, truth, levels)
    lv = torch.as_tensor(list(levels), dtype=torch.float64)
    return {"levels": list(levels), "coverage": coverage_curve(samples, truth, levels).tolist(),
            "rank_counts": counts.tolist(), "rank_expected": expected.tolist(),
            "sbc_chi2": stat, "sbc_chi2_p": p, "sbc_ks": ks_uniformity(ranks, n),
            "tarp_coverage": tarp.tolist(), "tarp_dev": float((tarp - lv).abs().max()),
            "n_samples": n}
