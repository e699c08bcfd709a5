"""Posterior accuracy metrics against the truth and against a reference posterior.

All functions take batches over M measurements: fields ``(M, *x_shape)``, samples
``(M, n, *x_shape)``, and return plain floats (averaged over measurements) so results are
JSON-able.
"""

from __future__ import annotations

from typing import Any

import torch


def rms(t: torch.Tensor) -> float:
    return float(t.double().square().mean().sqrt())


def coverage(samples: torch.Tensor, truth: torch.Tensor, level: float) -> float:
    """Fraction of pixels whose true value lies in the central ``level`` interval of the
    samples (a calibrated posterior gives ``level``)."""
    lo_q, hi_q = (1 - level) / 2, (1 + level) / 2
    q = torch.quantile(samples.double().flatten(2), torch.tensor([lo_q, hi_q],
                       dtype=torch.float64, device=samples.device), dim=1)
    t = truth.double().flatten(1)
    return float(((t >= q[0]) & (t <= q[1])).double().mean())


def posterior_metrics(
    samples: torch.Tensor,
    truth: torch.Tensor | None = None,
    ref_mean: torch.Tensor | None = None,
    ref_std: torch.Tensor | None = None,
) -> dict[str, float]:
    """Metrics of posterior ``samples (M, n, *x_shape)``.

    Against the truth ``(M, *x_shape)``: ``rmse_truth`` of the posterior mean, ``coverage_50`` /
    ``coverage_90`` of the central intervals. Against a reference posterior (mean and std,
    ``(M, *x_shape)`` or ``x_shape``): ``rmse_ref`` of the mean, ``mean_err_std`` = RMS over
    pixels of (mean - ref_mean) / ref_std, ``std_ratio`` = mean std / mean ref std,
    ``std_corr`` = correlation of the std fields, and the reference's own ``ref_rmse_truth``.
    """
    mean = samples.double().mean(1)
    std = samples.double().std(1)
    out: dict[str, float] = {"mean_std": float(std.mean())}
    if truth is not None:
        truth = truth.double().to(mean.device)
        out["rmse_truth"] = rms(mean - truth)
        out["coverage_50"] = coverage(samples, truth, 0.5)
        out["coverage_90"] = coverage(samples, truth, 0.9)
    if ref_mean is not None and ref_std is not None:
        ref_mean = ref_mean.double().to(mean.device).expand_as(mean)
        ref_std = ref_std.double().to(mean.device).expand_as(std)
        out["rmse_ref"] = rms(mean - ref_mean)
        out["mean_err_std"] = rms((mean - ref_mean) / ref_std)
        out["std_ratio"] = float(std.mean() / ref_std.mean())
        out["std_corr"] = _corr(std, ref_std)
        if truth is not None:
            out["ref_rmse_truth"] = rms(ref_mean - truth)
    return out


def _corr(a: torch.Tensor, b: torch.Tensor) -> float:
    a = a.flatten() - a.mean()
    b = b.flatten() - b.mean()
    den = float(a.norm() * b.norm())
    return float((a @ b) / den) if den > 0 else float("nan")


def reference_moments(
    prior: Any, forward_model: Any, noise_model: Any, y: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, str] | None:
    """A reference posterior's mean and std for ``y (M, *y_shape)``, or None.

    Exact for linear-Gaussian problems; otherwise a prior may offer
    ``reference_posterior(y, forward_model, noise_model) -> (mean, std)`` (e.g. MCMC over its
    parameters).
    """
    from invdiff.errors import ConfigError
    from invdiff.reference import exact_posterior

    try:
        post = exact_posterior(prior, forward_model, noise_model)
    except ConfigError:
        post = None
    if post is not None:
        mean = post.mean(y.double())
        return mean, post.std.expand_as(mean), "exact"
    hook = getattr(prior, "reference_posterior", None)
    if hook is not None:
        mean, std = hook(y, forward_model, noise_model)
        return mean, std, "prior.reference_posterior"
    return None
