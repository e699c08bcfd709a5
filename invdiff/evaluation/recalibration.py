r"""Recalibrating a posterior's spread by a proper scoring rule: :func:`calibrate`.

A learned posterior can be too wide or too narrow. :func:`calibrate` fits one spread factor c
on simulated pairs the net did not train on: each sample is moved to
:math:`\bar x + c\,(x - \bar x)` (:math:`\bar x` the per-pixel posterior mean). Each pair m
is scored by its CRPS averaged over its uncertain pixels (:mod:`invdiff.evaluation.metrics`;
the certain background is scored at any width, so it would only dilute the fit), and for each
c of a grid the change :math:`d_m(c)` against c = 1 is bounded from above by
:math:`\bar d(c) + z\,\mathrm{sd}(d)/\sqrt{M}` (z = :data:`Z_GUARD`). The fitted c has the
lowest bound, and stays 1 unless some bound is negative: with few pairs the CRPS is flat near
its minimum, and a factor that only fits the pairs' noise would make new measurements worse.
The result, a :class:`Calibration`, is applied by
``invdiff.sample_posterior(model, y, calibration=cal)``.

What it guarantees: on measurements exchangeable with the calibration pairs (same prior,
forward model and noise), the calibrated posterior's expected CRPS on the uncertain pixels is
no worse than the raw one's, except with a small probability (about 2%, the one-sided bound's)
that the pairs' noise alone moved c, and its coverage is what it reached on the pairs. What it
cannot do: add information the net did not extract (the mean is unchanged, so a wide posterior
around a poor mean stays wide), fix a noise model that does not describe the real noise, or
rescue a measurement unlike the training data (see ``invdiff infer``'s out-of-distribution verdict).

Runs keep a calibration beside their checkpoint, one file per sampler
(``checkpoints/calibration-SAMPLER.json``, :func:`calibration_path`): it records what it was
fitted for (the checkpoint's sha256, the sampler and its settings, the sample count and seed),
and :func:`load_or_fit` uses a stored one only when all of these match, fitting it again
otherwise. ``invdiff sample``, ``invdiff run``, ``invdiff infer`` and the study apply it when
``sampling.calibration_pairs`` (or the study preset's ``calibration_pairs``) is above 0.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from invdiff.errors import DataError
from invdiff.params import DEFAULT_SAMPLER, DEFAULT_THREADS

__all__ = ["Calibration", "calibrate", "calibration_path", "fit_scale", "fitted_for",
           "load_or_fit", "GRID", "GUARANTEE"]

#: what a calibration promises and what it cannot do, in reports beside the fitted factor
GUARANTEE = ("for measurements exchangeable with the calibration pairs (same prior, forward "
             "model and noise): CRPS on the uncertain pixels no worse than the raw posterior's "
             "(but for a ~2% chance that the pairs' noise moved the factor) and coverage as "
             "on the pairs; it cannot add "
             "information the net did not extract, fix a wrong noise model, or rescue a "
             "measurement unlike the training data")

#: the guard against the calibration pairs' own noise: a factor c replaces c = 1 only when the
#: mean change of the per-pair CRPS plus Z_GUARD standard errors is negative (a one-sided
#: bound: about 2% of fits on pairs where c is no better than 1 would move)
Z_GUARD = 2.0
#: the version of the fitting rule, part of what a stored calibration was fitted for
CALIBRATION_RULE = 2

#: the spread factors tried (c = 1 among them)
GRID = tuple(round(0.4 + 0.05 * i, 2) for i in range(33))  # 0.40 ... 2.00


@dataclass
class Calibration:
    """A fitted spread factor ``scale`` (c) and what it did on the calibration pairs."""

    scale: float
    n_pairs: int
    crps_raw: float
    crps_calibrated: float
    coverage_90_uncertain_raw: float
    coverage_90_uncertain_calibrated: float
    method: str = "spread scale fitted by CRPS on the uncertain pixels"
    #: what it was fitted for (:func:`fitted_for`): the checkpoint's sha256, the sampler, its
    #: params, the samples per measurement n, the chains' seed and the number of pairs
    fitted_for: dict[str, Any] | None = None

    def applies_to(self, settings: dict[str, Any]) -> bool:
        """Whether this calibration fits a model and sampling ``settings`` (a
        :func:`fitted_for` dict): same checkpoint, sampler, params and n (the seed and the
        pairs it was fitted on do not matter for applying it)."""
        keys = ("checkpoint_sha256", "sampler", "params", "n")
        mine = self.fitted_for or {}
        return all(mine.get(k) == settings.get(k) for k in keys)

    def summary(self) -> dict[str, Any]:
        """The fitted transform and its effect on the calibration pairs, for reports."""
        return {**asdict(self), "guarantee": GUARANTEE}

    def apply_samples(self, samples: torch.Tensor) -> torch.Tensor:
        """Samples ``(M, n, *x_shape)`` with their spread about the per-pixel mean scaled."""
        return _spread(samples, self.scale)

    def apply(self, posterior: Any) -> Any:
        """A :class:`~invdiff.sampling.posterior.Posterior` with calibrated samples and
        summaries (nfe, seconds and info kept; ``info["calibration"]`` the factor)."""
        from invdiff.sampling.posterior import Posterior

        return Posterior.from_samples(
            self.apply_samples(posterior.samples), posterior.quantile_levels,
            nfe=posterior.nfe, seconds=posterior.seconds,
            info={**posterior.info, "calibration": self.scale})

    def save(self, path: str | Path) -> Path:
        """Write as JSON, atomically (runs keep it beside their checkpoint)."""
        from invdiff.io import atomic_write_text

        return atomic_write_text(path, json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, path: str | Path) -> Calibration:
        try:
            return cls(**json.loads(Path(path).read_text()))
        except (OSError, ValueError, TypeError) as exc:
            raise DataError(f"{path} is not a calibration written by invdiff ({exc}); fit one "
                            f"again with invdiff.calibrate") from None


def calibrate(model: Any, pairs: Any, n: int = 64, seed: int = 0, *,
              threads: int | None = DEFAULT_THREADS, record: dict[str, Any] | None = None,
              **sampling: Any) -> Calibration | None:
    """Fit a :class:`Calibration` of ``model`` on ``pairs`` (a
    :class:`~invdiff.data.Dataset`, or ``(x, y)``, that the net did not train on, e.g. the
    validation split): their posteriors are sampled with ``n`` samples each and ``sampling``
    (``sampler=...`` and its parameters, as for :func:`invdiff.sample_posterior`); ``record``:
    what it is fitted for (:func:`fitted_for`), kept with it. Under torchrun every rank samples
    its share of the pairs and rank 0 fits (None on the other ranks)."""
    from invdiff.evaluation.metrics import coverage, crps, uncertain_pixels
    from invdiff.evaluation.score import sample_shared_out

    x, y = (pairs.x, pairs.y) if hasattr(pairs, "x") else pairs
    if len(x) < 2:
        raise DataError(f"calibration needs at least 2 held-out pairs, got {len(x)}")
    sampler = sampling.pop("sampler", DEFAULT_SAMPLER)
    post = sample_shared_out(model, y, seed, sampler, n, threads, **sampling)
    if post is None:  # another torchrun rank: rank 0 fits
        return None
    samples = post.samples.detach().double().cpu()
    truth = x.double().cpu()
    where = uncertain_pixels(samples.std(1))
    best = fit_scale(samples, truth, where)
    scores = {c: float(crps(_spread(samples, c), truth)[where].mean()) for c in (1.0, best)}
    fitted = _spread(samples, best)
    return Calibration(
        scale=best, n_pairs=len(x), crps_raw=scores[1.0], crps_calibrated=scores[best],
        coverage_90_uncertain_raw=coverage(samples, truth, 0.9, where),
        coverage_90_uncertain_calibrated=coverage(fitted, truth, 0.9, where),
        fitted_for=record)


def fitted_for(checkpoint_sha256: str | None, sampler: str, params: dict[str, Any], n: int,
               seed: int, n_pairs: int) -> dict[str, Any]:
    """What a calibration depends on: the checkpoint's bytes, the sampler and its settings,
    the samples per measurement, the chains' seed and the number of pairs (the first
    ``n_pairs`` of the validation split). ``invdiff sample`` and the study describe it alike,
    so each uses the other's stored calibration."""
    return json.loads(json.dumps({"checkpoint_sha256": checkpoint_sha256, "sampler": sampler,
                                  "params": params, "n": n, "seed": seed,
                                  "n_pairs": n_pairs, "rule": CALIBRATION_RULE}))


def fit_scale(samples: torch.Tensor, truth: torch.Tensor, where: torch.Tensor) -> float:
    """The spread factor of :data:`GRID` for posterior ``samples (M, n, *x_shape)`` of pairs
    with truths ``(M, *x_shape)``, scored on the pixels ``where`` (module docstring: the lowest
    upper bound on the per-pair CRPS change against c = 1; 1 when no bound is negative)."""
    raw = _pair_crps(samples, truth, where)
    best, bound = 1.0, 0.0
    for c in GRID:
        change = _pair_crps(_spread(samples, c), truth, where) - raw
        upper = float(change.mean() + Z_GUARD * change.std() / len(change) ** 0.5)
        if upper < bound:
            best, bound = c, upper
    return best


def _spread(samples: torch.Tensor, c: float) -> torch.Tensor:
    mean = samples.mean(1, keepdim=True)
    return mean + c * (samples - mean)


def _pair_crps(samples: torch.Tensor, truth: torch.Tensor, where: torch.Tensor
               ) -> torch.Tensor:
    """The CRPS of each pair ``(M,)``, averaged over its uncertain pixels (0 for a pair
    without any)."""
    from invdiff.evaluation.metrics import crps

    w = where.double()
    total = (crps(samples, truth) * w).flatten(1).sum(1)
    return total / w.flatten(1).sum(1).clamp(min=1)


def calibration_path(checkpoint_dir: str | Path, sampler: str) -> Path:
    """Where a run keeps the calibration of its model for ``sampler``."""
    return Path(checkpoint_dir) / f"calibration-{sampler}.json"


def load_or_fit(path: str | Path, record: dict[str, Any], model: Any, pairs: Any,
                sampler: Any, threads: int | None = DEFAULT_THREADS, write: bool = True,
                **sampler_params: Any) -> Calibration | None:
    """The calibration stored at ``path`` if it was fitted for ``record`` (a
    :func:`fitted_for` dict: the model's checkpoint and the sampling settings), else one fitted
    now with :func:`calibrate` on ``pairs`` and written there (``write``: on torchrun's rank 0
    only). None on the other torchrun ranks."""
    p = Path(path)
    if p.is_file():
        try:
            stored = Calibration.load(p)
        except DataError:
            stored = None  # damaged: fitted again and replaced
        if stored is not None and stored.fitted_for == record:
            return stored
    cal = calibrate(model, pairs, n=record["n"], seed=record["seed"], threads=threads,
                    record=record, sampler=sampler, **sampler_params)
    if cal is not None and write:
        cal.save(p)
    return cal
