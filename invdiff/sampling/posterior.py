r"""Posterior sampling in one call: :func:`sample_posterior` and its result :class:`Posterior`.

Given a score (a :class:`~invdiff.training.model.ScoreModel`, a ScoreNet or any score callable) and
measurements ``y (M, *y_shape)`` in physical units:

1. if the score carries ``.normalization`` (as a ScoreModel does), y is normalised with it, the
   sampler runs in normalised units, and the samples are mapped back with ``denormalize_x``;
2. the ladder defaults to ``score.sigmas`` (the one the model was trained on);
3. the sampler is a name (built with ``invdiff.create("sampler", name, **sampler_params)``) or a
   Sampler instance.

The summary statistics are per pixel over the n samples of each measurement: mean, std
(unbiased, n - 1) and the requested quantiles (linear interpolation between order statistics,
numpy's default); equal-tailed credible intervals come from the same quantile rule.

:func:`sample_measurements` seeds each measurement's chains by its index (``(seed, m)``), so
the posterior of measurement m does not depend on which other measurements are sampled with it
or on how many processes share them out (``invdiff sample`` under torchrun).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from invdiff.checks import as_batch, seeded_generator, to_tensor
from invdiff.data.masking import check_gaps
from invdiff.errors import ConfigError, DataError
from invdiff.interfaces import Sampler, ScoreFn
from invdiff.params import DEFAULT_N_SAMPLES, DEFAULT_SAMPLER, DEFAULT_THREADS
from invdiff.runtime import torch_threads

__all__ = ["Posterior", "sample_posterior", "sample_measurements", "quantile"]

DEFAULT_QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


def quantile(samples: torch.Tensor, q: Sequence[float], dim: int = 1) -> torch.Tensor:
    """Quantiles ``q`` of ``samples`` along ``dim``: ``(len(q), *shape without dim)``.

    Linear interpolation between order statistics (position q (n - 1)), as numpy's default.
    Sort-based, so unlike ``torch.quantile`` it has no input-size limit.
    """
    qs = torch.as_tensor(list(q), dtype=torch.float64)
    if qs.numel() == 0 or bool(((qs < 0) | (qs > 1)).any()):
        raise ConfigError(f"quantile levels must lie in [0, 1], got {list(q)}")
    srt = samples.sort(dim=dim).values.movedim(dim, 0)  # (n, ...)
    pos = qs * (srt.shape[0] - 1)
    lo = pos.floor().long()
    hi = pos.ceil().long()
    w = (pos - lo).to(srt.dtype).reshape(-1, *([1] * (srt.dim() - 1))).to(srt.device)
    return srt[lo.to(srt.device)] * (1 - w) + srt[hi.to(srt.device)] * w


@dataclass
class Posterior:
    """Samples of p(x | y_m) for M measurements and their per-pixel summaries.

    samples: ``(M, n, *x_shape)`` in physical units; mean, std: ``(M, *x_shape)``;
    quantiles: ``(Q, M, *x_shape)`` at ``quantile_levels``; nfe: score evaluations per chain;
    seconds: sampling wall time; info: the sampler's extras.
    """

    samples: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    quantiles: torch.Tensor
    quantile_levels: tuple[float, ...]
    nfe: int
    seconds: float
    info: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_samples(
        cls,
        samples: torch.Tensor,
        quantile_levels: Sequence[float] = DEFAULT_QUANTILES,
        nfe: int = 0,
        seconds: float = 0.0,
        info: dict[str, Any] | None = None,
    ) -> Posterior:
        """Summarise ``samples (M, n, *x_shape)``; std needs n >= 2 (else it is NaN)."""
        levels = tuple(float(q) for q in quantile_levels)
        return cls(
            samples=samples,
            mean=samples.mean(dim=1),
            std=samples.std(dim=1) if samples.shape[1] > 1 else torch.full_like(
                samples[:, 0], float("nan")),
            quantiles=quantile(samples, levels) if levels else samples.new_zeros(0),
            quantile_levels=levels,
            nfe=nfe,
            seconds=seconds,
            info=dict(info or {}),
        )

    @property
    def n_samples(self) -> int:
        return int(self.samples.shape[1])

    def credible_interval(self, level: float = 0.9) -> tuple[torch.Tensor, torch.Tensor]:
        """Equal-tailed interval holding ``level`` of the posterior mass, per pixel:
        the ((1 - level)/2, (1 + level)/2) quantiles, each ``(M, *x_shape)``."""
        if not 0 < level < 1:
            raise ConfigError(f"credible level must be in (0, 1), got {level}")
        lo, hi = quantile(self.samples, ((1 - level) / 2, (1 + level) / 2))
        return lo, hi

    def save(self, path: str | Path) -> Path:
        """Write samples and summaries atomically to an ``.npz`` (readable without invdiff),
        with the checksum of its arrays (array ``sha256``, as datasets carry)."""
        arrays = {
            "samples": self.samples.detach().cpu().numpy(),
            "mean": self.mean.detach().cpu().numpy(),
            "std": self.std.detach().cpu().numpy(),
            "quantiles": self.quantiles.detach().cpu().numpy(),
            "quantile_levels": np.asarray(self.quantile_levels, dtype=np.float64),
            "nfe": np.asarray(self.nfe),
            "seconds": np.asarray(self.seconds),
            "info": np.asarray(json.dumps(_jsonable(self.info))),
        }
        from invdiff.data.dataset import save_arrays  # one checksummed .npz rule

        return save_arrays(path, arrays)

    @classmethod
    def load(cls, path: str | Path) -> Posterior:
        """Read a file written by :meth:`save`, its checksum verified: a damaged or unreadable
        file is a :class:`~invdiff.errors.DataError` naming it; a file without checksum (older
        invdiff) loads with a warning."""
        from invdiff.data.dataset import load_arrays

        a = load_arrays(path, "sample again (`invdiff sample CONFIG`) to write it afresh")
        missing = {"samples", "mean", "std", "quantiles", "quantile_levels", "nfe", "seconds",
                   "info"} - set(a)
        if missing:
            raise DataError(f"{path} lacks arrays {sorted(missing)}; it is not a posterior "
                            f"written by invdiff (Posterior.save)")
        return cls(
            samples=torch.from_numpy(a["samples"]),
            mean=torch.from_numpy(a["mean"]),
            std=torch.from_numpy(a["std"]),
            quantiles=torch.from_numpy(a["quantiles"]),
            quantile_levels=tuple(float(q) for q in a["quantile_levels"]),
            nfe=int(a["nfe"]),
            seconds=float(a["seconds"]),
            info=json.loads(str(a["info"])),
        )


def _jsonable(obj: Any) -> Any:
    """info values as JSON: tensors become lists, unknown objects their repr."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().tolist()
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    return repr(obj)


def sample_posterior(
    score_or_model: ScoreFn,
    y: torch.Tensor,
    sampler: str | Sampler = DEFAULT_SAMPLER,
    n: int = DEFAULT_N_SAMPLES,
    sigmas: torch.Tensor | Sequence[float] | None = None,
    quantiles: Sequence[float] = DEFAULT_QUANTILES,
    generator: torch.Generator | None = None,
    threads: int | None = DEFAULT_THREADS,
    calibration: Any = None,
    **sampler_params: Any,
) -> Posterior:
    """Draw ``n`` posterior samples for each measurement in ``y (M, *y_shape)`` (or one y; a
    torch tensor or a NumPy array).

    ``sampler``: a registered name (``sampler_params`` go to its factory) or a Sampler.
    ``sigmas``: the ladder; defaults to ``score_or_model.sigmas``. Units: y and the returned
    samples are physical; a ``.normalization`` on the score maps them to and from the units the
    score works in. Entries of y that were not measured are NaN, for a model trained with
    ``training.masking`` (``score.masking``); any other score refuses them. ``threads``: CPU
    threads (torch and BLAS) while sampling; None leaves
    torch's default (one per core), which collapses on a shared machine (see the thread policy
    in docs/training.md). ``calibration``: a fitted
    :class:`~invdiff.evaluation.recalibration.Calibration` (from :func:`invdiff.calibrate`),
    applied to the samples. Returns a :class:`Posterior`.
    """
    if isinstance(sampler, str):
        sampler = _create_sampler(sampler, sampler_params)
    elif sampler_params:
        raise ConfigError(
            f"sampler parameters {sorted(sampler_params)} can only be given with a sampler name; "
            f"configure the Sampler instance instead"
        )
    if sigmas is None:
        sigmas = getattr(score_or_model, "sigmas", None)
        if sigmas is None:
            raise ConfigError(
                "no noise ladder: pass sigmas=... (e.g. invdiff.sampling.sigmas.geometric(sigma_1, "
                "sigma_L, L)) or use a score model that carries .sigmas"
            )
    y = to_tensor(y, "y")  # numpy measurements are welcome
    y_shape = getattr(score_or_model, "y_shape", None)
    if y_shape is not None:
        y = as_batch(y, tuple(y_shape), "y")
    y = y.to(_input_dtype(score_or_model, y))
    # NaN = not measured: only for a model trained with training.masking (invdiff.data.masking)
    check_gaps(y, bool(getattr(score_or_model, "masking", False)), "y")
    _check_memory(score_or_model, sampler, y, n)  # safety: refuse sizes that cannot fit
    norm = getattr(score_or_model, "normalization", None)
    y_in = norm.normalize_y(y) if norm is not None else y
    sigmas = torch.as_tensor(sigmas).to(y.device)
    with torch_threads(threads):
        res = sampler.sample(score_or_model, y_in, sigmas, n, generator=generator)
    samples = res.samples
    if norm is not None:
        m, k = samples.shape[:2]
        samples = norm.denormalize_x(samples.reshape(m * k, *samples.shape[2:])).reshape(
            samples.shape)
    post = Posterior.from_samples(samples, quantiles, nfe=res.nfe, seconds=res.seconds,
                                  info=res.info)
    return post if calibration is None else calibration.apply(post)


def _check_memory(score: Any, sampler: Any, y: torch.Tensor, n: int) -> None:
    """Refuse ``n`` chains per measurement that cannot fit on y's device
    (:mod:`invdiff.resources`); skipped when neither the score nor the sampler knows x's
    shape."""
    from invdiff.resources import check_memory, sampling_bytes

    x_shape = getattr(score, "x_shape", None) or getattr(sampler, "x_shape", None)
    if x_shape is None:
        return
    m = int(y.shape[0])
    check_memory(sampling_bytes(m, n, tuple(x_shape)), setting="n", value=n,
                 what=f"{n} chains of x {tuple(x_shape)} for each of {m} measurements",
                 fix=" or sample fewer measurements per call", device=y.device)


def _input_dtype(score: Any, y: torch.Tensor) -> torch.dtype:
    """The dtype y must have for ``score``: its parameters' (a float64 or integer measurement
    would clash with float32 weights deep inside the net), else y's own if floating."""
    params = score.parameters() if isinstance(score, torch.nn.Module) else iter(())
    first = next(params, None)
    if first is not None and first.is_floating_point():
        return first.dtype
    return y.dtype if y.is_floating_point() else torch.get_default_dtype()
def sample_measurements(
    score_or_model: ScoreFn,
    y: torch.Tensor,
    seed: int,
    indices: Sequence[int] | None = None,
    sampler: str | Sampler = DEFAULT_SAMPLER,
    n: int = DEFAULT_N_SAMPLES,
    sigmas: torch.Tensor | Sequence[float] | None = None,
    quantiles: Sequence[float] = DEFAULT_QUANTILES,
    threads: int | None = DEFAULT_THREADS,
    **sampler_params: Any,
) -> Posterior:
    """:func:`sample_posterior` one measurement at a time, measurement ``indices[i]`` (default
    ``i``) of ``y (M, *y_shape)`` drawn from a generator seeded by ``(seed, indices[i])`` on
    the score's device: its samples are the same whether it is sampled alone, with others, or
    on another rank. ``nfe`` is per chain; ``seconds`` the total; ``info`` the first
    measurement's.
    """
    indices = list(range(len(y))) if indices is None else [int(i) for i in indices]
    if len(indices) != len(y) or not indices:
        raise ConfigError(f"{len(indices)} indices for {len(y)} measurements; give one index "
                          f"for each of at least one measurement")
    if isinstance(sampler, str):
        sampler = _create_sampler(sampler, sampler_params)
    elif sampler_params:
        raise ConfigError("sampler parameters need a sampler name, not a Sampler instance")
    parts = [
        sample_posterior(score_or_model, y[i:i + 1], sampler=sampler, n=n, sigmas=sigmas,
                         quantiles=(), threads=threads,
                         generator=seeded_generator(seed, m, device=y.device))
        for i, m in enumerate(indices)
    ]
    samples = torch.cat([p.samples for p in parts])
    return Posterior.from_samples(samples, quantiles, nfe=parts[0].nfe,
                                  seconds=sum(p.seconds for p in parts), info=parts[0].info)


def _create_sampler(name: str, params: dict[str, Any]) -> Sampler:
    from invdiff.plugins import create

    return create("sampler", name, **params)
