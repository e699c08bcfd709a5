"""Held-out measurements and the reference posteriors the cSDM is measured against.

Held-out set of a problem at test noise level L: the truths x and clean measurements of the
pipeline's held-out pairs (``data/test.npz`` of the problem's first training level), with fresh
measurement noise at level L (a fixed seed per level). Every net, sampler and training level
is thus tested on the same truths, and a misspecified model (trained at L' != L) sees exactly
the measurements a well-specified one sees.

References (``ProblemSpec.reference``), each computed once per (problem, L) and cached:

* ``exact``: the closed-form linear-Gaussian posterior (``invdiff.metrics.reference_moments``);
* ``mcmc``: the ensemble MCMC over the circular inclusion's parameters
  (``invdiff_elasticity.mcmc.reference_posterior``), on the first ``mcmc.n_ref`` measurements,
  with the absolute noise std the simulator used (level x RMS of the clean measurement);
* ``mcmc-oce``: the ensemble MCMC over the tumour spheroid's 9 parameters with the exact phase
  likelihood (``invdiff_oce.reference``; needs the noise model's ``speckle_smoothing = 0``);
* ``algebraic``: the OCE stress/strain estimate (``invdiff_oce.algebraic``), a point estimate;
* ``none``: no reference.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from invdiff import pipeline
from invdiff.data import load_dataset
from invdiff.io import cached_arrays
from invdiff.plugins import create

from .preset import Preset

HELD_OUT_SEED = 7_919  # the held-out noise draws: seed + round(1e6 L)


@dataclass
class HeldOut:
    """Held-out pairs at one test noise level: x, y, y_clean ``(M, ...)``, physical units."""

    problem: str
    level: float
    x: torch.Tensor
    y: torch.Tensor
    y_clean: torch.Tensor
    components: tuple[Any, Any, Any]  # prior, forward model, noise model at this level


@dataclass
class Reference:
    """A reference posterior on measurements ``index``: mean ``(K, *x_shape)``, std (or None
    for a point estimate), seconds per measurement, and its ``kind``."""

    kind: str
    index: list[int]
    mean: torch.Tensor
    std: torch.Tensor | None
    seconds: float
    info: dict[str, Any]


def held_out(preset: Preset, problem: str, level: float) -> HeldOut:
    """The held-out set of ``problem`` at test noise ``level`` (see the module docstring)."""
    spec = preset.problems[problem]
    base_cfg = preset.experiment(problem, spec.noise_levels[0])
    test = load_dataset(pipeline.output_paths(base_cfg)["test"])
    if test.y_clean is None:
        raise RuntimeError(f"{problem}: the held-out set has no clean measurements; "
                           f"re-simulate it with this version of invdiff")
    cfg = preset.experiment(problem, level)
    prior, fwd, _ = pipeline.build_problem(cfg)
    nm = cfg.problem.noise_model
    noise = create("noise_model", nm.name, **nm.params)
    g = torch.Generator().manual_seed(HELD_OUT_SEED + round(1e6 * level))
    y = noise(test.y_clean, generator=g)
    return HeldOut(problem, level, test.x, y, test.y_clean, (prior, fwd, noise))


def exact_reference(preset: Preset, h: HeldOut, cache: Path) -> Reference | None:
    from invdiff.metrics import reference_moments

    t0 = time.perf_counter()
    ref = reference_moments(*h.components, h.y)
    if ref is None:
        return None
    return Reference("exact", list(range(len(h.x))), ref[0].float(), ref[1].float(),
                     (time.perf_counter() - t0) / len(h.x), {})


def sampled_reference(preset: Preset, h: HeldOut, cache: Path, kind: str,
                      run_one: Callable[[int], Any]) -> Reference:
    """A sampled (MCMC) reference on the first ``mcmc.n_ref`` measurements: ``run_one(m)``
    returns an ``MCMCResult`` for measurement m; its summary is cached per (level, size, m)."""
    mc = preset.problems[h.problem].mcmc
    rows = []
    for m in range(min(mc.n_ref, len(h.x))):
        path = cache / f"{kind}-{h.level:g}-{mc.steps}x{mc.walkers}-{m}.npz"
        rows.append(cached_arrays(path, lambda m=m: run_one(m).summary_arrays()))
    mean = torch.stack([torch.from_numpy(r["mean"]) for r in rows])[:, None].float()
    std = torch.stack([torch.from_numpy(r["std"]) for r in rows])[:, None].float()
    return Reference(kind, list(range(len(rows))), mean, std,
                     float(np.mean([r["seconds"] for r in rows])),
                     {"rhat_max": float(max(r["rhat_max"] for r in rows)),
                      "solves": float(np.mean([r["solves"] for r in rows])),
                      "steps": mc.steps, "walkers": mc.walkers})


def mcmc_reference(preset: Preset, h: HeldOut, cache: Path) -> Reference:
    """The inclusion-parameter MCMC (elasticity, relative Gaussian noise)."""
    from invdiff_elasticity.mcmc import reference_posterior, relative_noise_std

    mc = preset.problems[h.problem].mcmc
    prior, fem, _ = h.components
    return sampled_reference(preset, h, cache, "mcmc", lambda m: reference_posterior(
        h.y[m], relative_noise_std(h.y_clean[m], h.level), prior, fem, n_steps=mc.steps,
        n_walkers=mc.walkers, seed=m))


def oce_mcmc_reference(preset: Preset, h: HeldOut, cache: Path) -> Reference:
    """The spheroid-parameter MCMC with the exact OCE phase likelihood (unsmoothed speckle)."""
    from invdiff_oce.likelihood import PhaseErrorTable
    from invdiff_oce.reference import reference_posterior

    mc = preset.problems[h.problem].mcmc
    prior, fwd, noise = h.components
    table = PhaseErrorTable.lazy(noise, h.y.shape[-2])  # built by the first uncached chain

    def run_one(m: int):
        return reference_posterior(h.y[m], prior, fwd, noise, table(), n_steps=mc.steps,
                                   n_walkers=mc.walkers, seed=m)

    return sampled_reference(preset, h, cache, "mcmc-oce", run_one)


def algebraic_reference(preset: Preset, h: HeldOut, cache: Path) -> Reference:
    from invdiff_oce.algebraic import algebraic_estimate

    p = preset.experiment(h.problem, h.level).problem.prior.params
    t0 = time.perf_counter()
    est = algebraic_estimate(h.y, p.get("layer_modulus", 1.0), p.get("layer_thickness", 0.125))
    return Reference("algebraic", list(range(len(h.x))), est.float(), None,
                     (time.perf_counter() - t0) / len(h.x), {})


REFERENCES: dict[str, Callable[[Preset, HeldOut, Path], Reference | None]] = {
    "exact": exact_reference, "mcmc": mcmc_reference, "mcmc-oce": oce_mcmc_reference,
    "algebraic": algebraic_reference,
    "none": lambda preset, h, cache: None,
}


def reference(preset: Preset, h: HeldOut) -> Reference | None:
    """The problem's reference posterior on the held-out set ``h``."""
    cache = Path(preset.runs) / h.problem / "references"
    return REFERENCES[preset.problems[h.problem].reference](preset, h, cache)
