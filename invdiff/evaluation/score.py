"""Sample and score: the one way ``invdiff sample``, the study, the demo and the benchmarks
draw posterior samples of measurements and measure them.

One seeding rule: the chains of measurement m are drawn from a generator seeded by
``(seed, m)`` (:func:`invdiff.sampling.posterior.sample_measurements`), so a measurement's
samples depend only on the model, the sampler, n, the seed and its index, not on which other
measurements are sampled with it, nor on how many processes share them out. A study cell and
``invdiff sample`` with the same model, sampler, seed and n thus give the same samples.

Scores (all optional, by what is given): the metrics against the truth and a reference
posterior (:func:`invdiff.evaluation.metrics.sample_metrics`), calibration (SBC, TARP:
:func:`invdiff.evaluation.calibration.calibration_summary`), and the problem-specific metrics
that plugins register (:func:`invdiff.evaluation.problem_metrics.problem_metrics`).

With a calibration (:mod:`invdiff.evaluation.recalibration`) the posterior and its scores are
the calibrated ones, and ``metrics["raw"]`` holds the uncalibrated posterior's metrics against
the truth and reference (:data:`RAW_KEYS` of them), ``metrics["calibration"]`` the fitted
transform: raw and calibrated side by side.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from invdiff.params import DEFAULT_THREADS
from invdiff.sampling.posterior import DEFAULT_QUANTILES, Posterior, sample_measurements
from invdiff.training import distributed

__all__ = ["Scored", "sample_and_score", "sample_shared_out", "score", "RAW_KEYS"]

#: the uncalibrated posterior's metrics reported beside the calibrated ones (the mean, and so
#: the RMSE and mean error, is the same for both)
RAW_KEYS = ("std_ratio", "mean_std", "coverage_50", "coverage_90", "coverage_50_uncertain",
            "coverage_90_uncertain", "coverage_90_uncertain_ref", "crps", "crps_uncertain",
            "energy_score")


@dataclass
class Scored:
    """A posterior with its scores: ``metrics`` (JSON-able numbers, with ``nfe`` and
    ``seconds``), ``calibration`` (SBC/TARP details; empty unless asked for)."""

    posterior: Posterior
    metrics: dict[str, Any] = field(default_factory=dict)
    calibration: dict[str, Any] = field(default_factory=dict)


def sample_shared_out(model: Any, y: torch.Tensor, seed: int, sampler: Any, n: int,
                      threads: int | None = DEFAULT_THREADS,
                      quantiles: Sequence[float] = DEFAULT_QUANTILES,
                      **sampler_params: Any) -> Posterior | None:
    """The posterior of every measurement in ``y (M, *y_shape)``, chains of measurement m
    seeded by ``(seed, m)``. Under torchrun each rank samples its share
    (:func:`invdiff.training.distributed.shard`) and rank 0 gathers them in measurement order
    (None on the other ranks); ``seconds`` is then the slowest rank's total."""
    ctx = distributed.context()
    mine = list(distributed.shard(len(y), ctx))  # empty on rank r >= M
    dev = getattr(getattr(model, "sigmas", None), "device", y.device)
    post = sample_measurements(model, y[mine].to(dev), seed, mine, sampler=sampler, n=n,
                               threads=threads, quantiles=quantiles,
                               **sampler_params) if mine else None
    if not ctx.active:
        return post
    parts = distributed.all_gather((mine, None, 0, 0.0, {}) if post is None else
                                   (mine, post.samples.cpu(), post.nfe, post.seconds, post.info))
    if not ctx.is_main:
        return None
    order = torch.tensor([m for p in parts for m in p[0]]).argsort()
    samples = torch.cat([p[1] for p in parts if p[0]])[order]
    nfe, info = next((p[2], p[4]) for p in parts if p[0])
    return Posterior.from_samples(samples, quantiles, nfe=nfe,
                                  seconds=max(p[3] for p in parts), info=info)


def sample_and_score(
    model: Any,
    y: torch.Tensor,
    *,
    seed: int,
    sampler: Any,
    n: int,
    truth: torch.Tensor | None = None,
    reference: Any = None,
    components: tuple[Any, Any, Any] | None = None,
    calibration_levels: Sequence[float] | None = None,
    rank_bins: int | None = None,
    train_x: torch.Tensor | None = None,
    calibration: Any = None,
    threads: int | None = DEFAULT_THREADS,
    quantiles: Sequence[float] = DEFAULT_QUANTILES,
    **sampler_params: Any,
) -> Scored | None:
    """Sample ``n`` posterior draws of each measurement ``y (M, *y_shape)`` (physical units;
    module docstring for the seeding) with ``sampler`` (a name, with ``sampler_params``, or a
    Sampler) and score them.

    truth ``(M, *x_shape)``: metrics against it; reference: a reference posterior of these
    measurements (:func:`invdiff.evaluation.references.reference_on`); components (prior,
    forward model, noise model): the problem, for problem-specific metrics;
    calibration_levels and rank_bins: SBC and TARP (needs the truth); train_x: the training
    fields, for the memorisation check (:mod:`invdiff.evaluation.memorisation`); calibration:
    a :class:`~invdiff.evaluation.recalibration.Calibration` applied to the samples (module
    docstring). ``metrics`` always holds
    ``nfe`` (score evaluations per chain), ``seconds`` (sampling wall time, all
    measurements), ``n_samples`` and ``n_measurements``. None on torchrun ranks other than 0.
    """
    post = sample_shared_out(model, y, seed, sampler, n, threads, quantiles, **sampler_params)
    if post is None:
        return None
    raw: dict[str, Any] = {}
    if calibration is not None:
        if truth is not None:
            from invdiff.evaluation.metrics import sample_metrics

            every = sample_metrics(post.samples.detach().float().cpu(), truth.cpu(), reference)
            raw = {k: every[k] for k in RAW_KEYS if k in every}
        post = calibration.apply(post)
    samples = post.samples.detach().float().cpu()
    metrics, calib = score(samples, truth, reference, components, calibration_levels,
                           rank_bins, train_x)
    metrics.update(nfe=post.nfe, seconds=post.seconds)
    if calibration is not None:
        metrics.update(raw=raw, calibration=calibration.summary())
    return Scored(post, metrics, calib)


def score(samples: torch.Tensor, truth: torch.Tensor | None = None, reference: Any = None,
          components: tuple[Any, Any, Any] | None = None,
          calibration_levels: Sequence[float] | None = None, rank_bins: int | None = None,
          train_x: torch.Tensor | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The scores of posterior ``samples (M, n, *x_shape)`` (CPU, physical units) of
    :func:`sample_and_score`, for samples drawn by anything (a peer method, say): metrics
    (with ``n_samples``, ``n_measurements``) and calibration details."""
    metrics: dict[str, Any] = {}
    calib: dict[str, Any] = {}
    if truth is not None:
        from invdiff.evaluation.metrics import sample_metrics

        metrics.update(sample_metrics(samples, truth.cpu(), reference))
        if calibration_levels is not None and rank_bins is not None:
            from invdiff.evaluation.calibration import calibration_summary

            calib = calibration_summary(samples, truth.cpu(), calibration_levels, rank_bins)
            metrics.update(sbc_chi2_p=calib["sbc_chi2_p"], sbc_ks=calib["sbc_ks"],
                           tarp_dev=calib["tarp_dev"])
        if components is not None:
            from invdiff.evaluation.problem_metrics import problem_metrics

            metrics.update(problem_metrics(components, samples, truth.cpu(),
                                           reserved=metrics))
    if train_x is not None:
        from invdiff.evaluation.memorisation import memorisation_metrics

        metrics.update(memorisation_metrics(samples, train_x, truth, reference))
    metrics.update(n_samples=int(samples.shape[1]), n_measurements=int(samples.shape[0]))
    return metrics, calib
