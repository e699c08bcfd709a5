r"""Posterior accuracy: the one set of metrics that ``invdiff sample`` and the study report.

Shapes: batches over M measurements: fields ``(M, *x_shape)``, samples ``(M, n, *x_shape)``.
Results are plain floats (pooled over measurements and pixels), so they are JSON-able.

* ``rmse_truth`` = sqrt(mean (m_hat - x)^2) of the posterior mean m_hat against the truth x;
* ``bias`` = mean (m_hat - x);
* ``coverage_a`` = fraction of true pixels inside the central a-interval
  [Q_{(1-a)/2}, Q_{(1+a)/2}] of the samples (quantiles interpolated linearly between order
  statistics, numpy's default, by sorting: no input-size limit, unlike ``torch.quantile``);
  a calibrated posterior gives a;
* against a reference posterior (mean m_r, std s_r): ``rmse_ref`` = RMS(m_hat - m_r),
  ``std_ratio`` = mean(std) / mean(s_r), ``std_corr`` = Pearson correlation of the std fields,
  ``mean_err_std`` = RMS((m_hat - m_r) / s_r), and the reference's own ``ref_rmse_truth``;
* on the **uncertain pixels** only, ``coverage_50_uncertain`` / ``coverage_90_uncertain``: a
  field with a certain background (a stiff inclusion in a known matrix) is covered at any
  width there, so pooled coverage reads "too wide" while the pixels that matter can be too
  narrow. A pixel is uncertain where the std, the reference's where there is one, else the
  posterior's own, exceeds a tenth of that field's largest (``uncertain_fraction``: their
  share);
* proper scoring rules, which reward sharpness and calibration together: ``crps``, the
  continuous ranked probability score per pixel averaged over pixels (in x's units; lower is
  better), ``crps_uncertain`` on the uncertain pixels, and ``energy_score``, its multivariate
  form per field, E||X - x|| - E||X - X'|| / 2 with norms over the field (RMS per pixel).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from invdiff.errors import DataError
from invdiff.sampling.posterior import quantile


def rms(t: torch.Tensor) -> float:
    return float(t.double().square().mean().sqrt())


def check_samples(samples: torch.Tensor, truth: torch.Tensor) -> None:
    """Samples ``(M, n, *x_shape)`` with n >= 2 against truths ``(M, *x_shape)``."""
    if samples.dim() < 2 or tuple(samples.shape[:1] + samples.shape[2:]) != tuple(truth.shape):
        raise DataError(f"samples {tuple(samples.shape)} and truth {tuple(truth.shape)} do not "
                        f"match: expected samples (M, n, *x_shape) and truth (M, *x_shape)")
    if samples.shape[1] < 2:
        raise DataError(f"calibration needs at least 2 samples per measurement, got "
                        f"{samples.shape[1]}")


def coverage_curve(samples: torch.Tensor, truth: torch.Tensor,
                   levels: Sequence[float]) -> torch.Tensor:
    """Empirical coverage ``(L,)`` of the central intervals at each nominal level in ``levels``
    (module docstring), pooled over measurements and pixels."""
    check_samples(samples, truth)
    lv = torch.as_tensor(list(levels), dtype=torch.float64)
    if lv.numel() == 0 or bool(((lv <= 0) | (lv >= 1)).any()):
        raise DataError(f"coverage levels must lie in (0, 1), got {list(levels)}")
    q = quantile(samples.double().flatten(2), torch.cat([(1 - lv) / 2, (1 + lv) / 2]).tolist())
    lo, hi = q[: len(lv)], q[len(lv):]  # (L, M, D) each
    t = truth.double().flatten(1).to(q.device)
    return ((t >= lo) & (t <= hi)).double().mean(dim=(1, 2)).cpu()


def coverage(samples: torch.Tensor, truth: torch.Tensor, level: float,
             where: torch.Tensor | None = None) -> float:
    """Coverage of the central ``level`` interval (a calibrated posterior gives ``level``);
    ``where`` ``(M, *x_shape)`` (bool): only those pixels."""
    if where is None:
        return float(coverage_curve(samples, truth, [level])[0])
    check_samples(samples, truth)
    lo, hi = quantile(samples.double(), ((1 - level) / 2, (1 + level) / 2))
    t = truth.double().to(lo.device)
    inside = (t >= lo) & (t <= hi)
    w = where.to(inside.device)
    return float(inside[w].double().mean()) if bool(w.any()) else float("nan")


def uncertain_pixels(std: torch.Tensor, fraction: float = 0.1) -> torch.Tensor:
    """Pixels whose std exceeds ``fraction`` of the largest in the same field:
    ``std (M, *x_shape)`` -> bool ``(M, *x_shape)``."""
    peak = std.flatten(1).amax(1).reshape(-1, *([1] * (std.dim() - 1)))
    return std > fraction * peak


def crps(samples: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """The ensemble CRPS per pixel ``(M, *x_shape)`` of samples ``(M, n, *x_shape)``:
    E|X - x| - E|X - X'| / 2, the pair term by the sorted-sample identity
    sum_{i,j} |x_i - x_j| = 2 sum_i (2 i - n - 1) x_(i) over n (n - 1) pairs (unbiased)."""
    s = samples.double()
    n = s.shape[1]
    first = (s - truth.double().unsqueeze(1).to(s.device)).abs().mean(1)
    srt = s.sort(dim=1).values
    w = (2 * torch.arange(1, n + 1, dtype=s.dtype, device=s.device) - n - 1)
    pair = 2 * (srt * w.reshape(1, n, *([1] * (s.dim() - 2)))).sum(1) / (n * (n - 1))
    return first - pair / 2


def energy_score(samples: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """The energy score per field ``(M,)``: E||X - x|| - E||X - X'|| / 2 (unbiased pair
    term), norms over the field as RMS per pixel so that fields of any size compare."""
    s = samples.double().flatten(2)
    n, d = s.shape[1], s.shape[2]
    first = (s - truth.double().flatten(1).unsqueeze(1).to(s.device)).norm(dim=2).mean(1)
    pair = torch.cdist(s, s).sum((1, 2)) / (n * (n - 1))
    return (first - pair / 2) / d**0.5


def posterior_metrics(
    samples: torch.Tensor,
    truth: torch.Tensor | None = None,
    ref_mean: torch.Tensor | None = None,
    ref_std: torch.Tensor | None = None,
) -> dict[str, float]:
    """Metrics of posterior ``samples (M, n, *x_shape)`` (module docstring).

    Against the truth ``(M, *x_shape)``: ``rmse_truth``, ``bias``, ``coverage_50`` /
    ``coverage_90``. Against a reference mean and std (``(M, *x_shape)`` or ``x_shape``):
    ``rmse_ref``, ``mean_err_std``, ``std_ratio``, ``std_corr`` and ``ref_rmse_truth``.
    """
    mean = samples.double().mean(1)
    std = samples.double().std(1)
    out: dict[str, float] = {"mean_std": float(std.mean())}
    if truth is not None:
        truth = truth.double().to(mean.device)
        out["rmse_truth"] = rms(mean - truth)
        out["bias"] = float((mean - truth).mean())
        out["coverage_50"] = coverage(samples, truth, 0.5)
        out["coverage_90"] = coverage(samples, truth, 0.9)
        spread = ref_std.double().to(mean.device).expand_as(std) if ref_std is not None else std
        where = uncertain_pixels(spread)
        out["uncertain_fraction"] = float(where.double().mean())
        out["coverage_50_uncertain"] = coverage(samples, truth, 0.5, where)
        out["coverage_90_uncertain"] = coverage(samples, truth, 0.9, where)
        c = crps(samples, truth)
        out["crps"] = float(c.mean())
        out["crps_uncertain"] = float(c[where].mean()) if bool(where.any()) else float("nan")
        out["energy_score"] = float(energy_score(samples, truth).mean())
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


def reference_comparison(samples: torch.Tensor, truth: torch.Tensor, ref: Any
                         ) -> dict[str, float]:
    """Posterior samples ``(M, n, *x_shape)`` against a reference posterior ``ref`` (a
    :class:`~invdiff.interfaces.ReferenceResult`) on the measurements it covers
    (``ref.index``): ``rmse_truth_refset`` (the samples' mean on those measurements) beside the
    reference's ``ref_rmse_truth``, ``rmse_ref`` between the means and, if the reference has a
    std, ``std_ratio``, ``std_corr`` and, where the reference std is positive at every pixel,
    ``mean_err_std`` (the mean's error in reference-std units; an MCMC reference over a
    parametric prior can be certain of some pixels, e.g. far from any inclusion, where it
    is undefined); and the coverage on the pixels the reference finds uncertain,
    ``coverage_50_uncertain_ref`` / ``coverage_90_uncertain_ref``."""
    sub, t = samples[ref.index], truth[ref.index].to(samples.device)
    m = sub.double().mean(1)
    ref_mean = ref.mean.double().to(m.device)
    out = {"rmse_truth_refset": rms(m - t.double()), "ref_rmse_truth": rms(ref_mean - t.double()),
           "rmse_ref": rms(m - ref_mean)}
    if ref.std is not None:
        full = posterior_metrics(sub, None, ref.mean, ref.std)
        out.update(std_ratio=full["std_ratio"], std_corr=full["std_corr"])
        where = uncertain_pixels(ref.std.double().to(m.device).expand_as(m))
        out["coverage_50_uncertain_ref"] = coverage(sub, t, 0.5, where)
        out["coverage_90_uncertain_ref"] = coverage(sub, t, 0.9, where)
        if bool((ref.std > 0).all()):
            out["mean_err_std"] = full["mean_err_std"]
    return out


def sample_metrics(samples: torch.Tensor, truth: torch.Tensor, ref: Any = None
                   ) -> dict[str, Any]:
    """Everything reported for posterior samples of held-out pairs: the metrics against the
    truth and, given a reference posterior, :func:`reference_comparison`."""
    out: dict[str, Any] = posterior_metrics(samples, truth.to(samples))
    if ref is not None:
        out.update(reference_comparison(samples, truth.to(samples), ref))
    return out


def _corr(a: torch.Tensor, b: torch.Tensor) -> float:
    a = a.flatten() - a.mean()
    b = b.flatten() - b.mean()
    den = float(a.norm() * b.norm())
    return float((a @ b) / den) if den > 0 else float("nan")


def exact_sampler_scores(ref_std: torch.Tensor, n: int) -> dict[str, float]:
    """What a perfect sampler with ``n`` samples per measurement is expected to score on
    ``std_ratio`` and ``std_corr`` against a Gaussian reference with marginal stds ``ref_std``
    (any shape, pooled like :func:`posterior_metrics`): the yardstick a learned posterior's
    numbers are read against, since neither reaches 1 with finitely many samples.

    * ``std_ratio`` = c4(n) = E[sample std] / std = sqrt(2 / (n-1)) Gamma(n/2) / Gamma((n-1)/2);
    * ``std_corr`` = sqrt(V / (V + E[s^2] / (2 (n-1)))), V = the variance of ``ref_std``
      over pixels: each pixel's std estimate carries relative noise of variance ~1/(2(n-1)),
      which dilutes the correlation most where the reference std field is nearly flat.
    """
    if n < 2:
        raise DataError(f"std needs at least 2 samples per measurement, got {n}")
    s = ref_std.double().flatten()
    c4 = math.exp(0.5 * math.log(2 / (n - 1)) + math.lgamma(n / 2) - math.lgamma((n - 1) / 2))
    v = float(s.var(unbiased=False))
    noise = float(s.square().mean()) / (2 * (n - 1))
    return {"std_ratio": c4, "std_corr": math.sqrt(v / (v + noise)) if v > 0 else float("nan")}
