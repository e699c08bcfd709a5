r"""Ensemble MCMC over the parameters of a parametric prior: the reference posteriors.

A parametric prior draws a few parameters theta uniformly on a box and paints a field from them.
It offers ``bounds`` (d, 2) float64 (a range with equal ends fixes that parameter), ``names``
(d,) and ``field_from_params(theta (k, d), dtype) -> x (k, *x_shape)``. For such a prior and any
log-likelihood of the field, :class:`ParameterPosterior` is

    log p(theta | y) = log L(field(theta)) + const on the prior's box, -inf outside,

and :func:`sample_parameter_posterior` samples it and pushes the draws to the posterior mean and
std FIELDS. Plugins supply the likelihood (Gaussian noise through an FEM, the OCE phase noise).

Sampler: the affine-invariant ensemble "stretch move" (Goodman & Weare 2010) of emcee
(Foreman-Mackey et al. 2013, ``emcee.EnsembleSampler`` with ``vectorize=True``): the walkers are
split at random into two halves; for walker X_k of one half and a walker X_j drawn from the
other, propose Y = X_j + z (X_k - X_j) with z ~ g(z) ∝ 1/sqrt(z) on [1/a, a], a = 2, and accept
with probability min(1, z^(d-1) p(Y) / p(X_k)), d the number of free parameters. Each half
moves in one batched likelihood call (one batched forward solve of its walkers). The random
stream is MT19937 seeded from ``seed``: a chain is reproducible for a given seed.

The prior's box: a proposal outside it has p(Y) = 0 and is rejected (the walker stays). This
keeps the posterior exact: the stretch move is a Metropolis-Hastings step whose Hastings factor
is z^(d-1), and a zero target density outside the support only makes the acceptance
probability zero there. Folding proposals back into the box by reflection would change the
proposal kernel, so that z^(d-1) would no longer be its Hastings factor, and bias the posterior
next to a wall. Reflection (:func:`reflect_into`) is used only for the starting walkers, which
do not affect the stationary distribution. A periodic parameter (``periods``) has no wall: its
walkers move on the real line and the posterior reads them modulo the period.

Start (``init``): "map" (default) takes the best of ``init_factor * n_walkers`` prior draws,
refines it by Nelder-Mead on -log p, and starts the walkers in a small ball (``init_scale`` of
each prior range) around that mode, from which the ensemble expands to the posterior's width
(a concentrated posterior is reached in far fewer steps than by contracting from the prior);
"prior" starts from the best ``n_walkers`` prior draws. The first ``burn_in`` steps are
discarded; R-hat near 1 says the start has been forgotten. Split R-hat and ESS per parameter
(:mod:`invdiff.evaluation.mcmc_diagnostics`) treat each walker as a chain (walkers are correlated,
so read them as indicative).
"""

from __future__ import annotations

import abc
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.optimize
import torch

from invdiff.data.masking import check_gaps
from invdiff.data.simulation import _default_spec
from invdiff.errors import ConfigError
from invdiff.evaluation.mcmc_diagnostics import effective_sample_size, split_rhat
from invdiff.integrity import fingerprint
from invdiff.interfaces import ReferencePosterior, ReferenceResult
from invdiff.io import cached_arrays
from invdiff.params import DEFAULT_MCMC_STEPS, DEFAULT_MCMC_WALKERS
from invdiff.runtime import torch_threads

LogProb = Callable[[np.ndarray], np.ndarray]

__all__ = ["MCMCResult", "ParameterPosterior", "sample_parameter_posterior", "ensemble_sample",
           "initial_walkers", "reflect_into", "uniform_box", "ParameterMCMCReference", "SAMPLER"]

#: Names the sampler in the MCMC references' cache keys: chains written by another sampler are
#: not read back.
SAMPLER = "emcee-stretch"


def uniform_box(n: int, lows: list[float], highs: list[float], generator, device) -> torch.Tensor:
    """``n`` iid uniform draws from the box prod_i [low_i, high_i]: (n, d) float64, drawn on
    the generator's device (reproducible whatever the target device) and moved to ``device``.
    The prior draw of a parametric prior."""
    gen_dev = generator.device if generator is not None else torch.device("cpu")
    lo = torch.tensor(lows, dtype=torch.float64, device=gen_dev)
    hi = torch.tensor(highs, dtype=torch.float64, device=gen_dev)
    u = torch.rand(n, len(lows), generator=generator, dtype=torch.float64, device=gen_dev)
    return (lo + u * (hi - lo)).to(device)


@dataclass
class MCMCResult:
    """params (S, d) posterior draws after burn-in; chain (n_steps, n_walkers, d) all draws;
    mean_field / std_field (N, N) float64; rhat / ess (d,) (NaN for fixed parameters);
    acceptance: mean acceptance rate after burn-in; cost: seconds, n_forward_solves."""

    params: torch.Tensor
    chain: torch.Tensor
    mean_field: torch.Tensor
    std_field: torch.Tensor
    rhat: np.ndarray
    ess: np.ndarray
    acceptance: float
    seconds: float
    n_forward_solves: int
    info: dict = field(default_factory=dict)

    def summary_arrays(self) -> dict[str, np.ndarray]:
        """What a reference needs, as numpy arrays (for ``invdiff.io.cached_arrays``):
        mean and std fields (N, N) float32, worst R-hat and ESS over the free parameters,
        seconds and forward solves."""
        return {"mean": self.mean_field.float().numpy(), "std": self.std_field.float().numpy(),
                "rhat_max": np.nanmax(self.rhat), "ess_min": np.nanmin(self.ess),
                "seconds": np.asarray(self.seconds), "solves": np.asarray(self.n_forward_solves)}


def ensemble_sample(log_prob: LogProb, init: np.ndarray, n_steps: int,
                    rng: np.random.Generator, a: float = 2.0, progress: bool = False
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Ensemble sampling of ``log_prob`` ((k, d) -> (k,), -inf where the density is zero) from
    walkers ``init`` (W, d), W even and at least 2 d + 2, by emcee's stretch move with scale
    ``a`` (module docstring). ``log_prob`` gets all walkers of one half in one call.

    emcee's MT19937 stream is seeded from ``rng``: equal generator states give equal chains.
    Returns the chain (n_steps, W, d) and the acceptance indicator (n_steps, W).
    """
    import emcee

    x = np.array(init, dtype=np.float64)
    n_walkers, d = x.shape
    if n_walkers < 2 * d + 2 or n_walkers % 2:
        raise ConfigError(f"n_walkers={n_walkers} must be even and at least 2 d + 2 = {2 * d + 2}")
    random = np.random.RandomState(np.random.MT19937(int(rng.integers(2**63))))
    sampler = emcee.EnsembleSampler(n_walkers, d, log_prob, moves=emcee.moves.StretchMove(a=a),
                                    vectorize=True)
    accepted = np.zeros((n_steps, n_walkers), dtype=bool)
    before = np.zeros(n_walkers, dtype=np.int64)
    start = emcee.State(x, random_state=random.get_state())
    for t, _ in enumerate(sampler.sample(start, iterations=n_steps, progress=progress)):
        total = sampler.backend.accepted  # accepted moves per walker so far
        accepted[t] = total > before
        before = total.copy()
    return sampler.get_chain(), accepted


class ParameterPosterior:
    """log p(theta_free | y) = log L(field(theta)) + const on the prior's box, counting solves.

    ``log_likelihood`` maps fields ``(k, *x_shape)`` float64 to ``(k,)``; ``prior`` offers
    ``bounds`` (d, 2), ``names`` and ``field_from_params``. A range with equal ends fixes that
    parameter. ``periods`` {index: period} marks angles whose range is one full period: they
    move freely on the real line and are read modulo the period (no wall at 0 = pi, where an
    orientation posterior may straddle the two ends of the range).
    """

    def __init__(self, log_likelihood: Callable[[torch.Tensor], torch.Tensor], prior: Any,
                 periods: dict[int, float] | None = None) -> None:
        self.log_likelihood, self.prior = log_likelihood, prior
        b = prior.bounds.numpy()
        self.lo, self.hi = b[:, 0], b[:, 1]
        self.free = np.flatnonzero(self.hi > self.lo)
        self.periods = dict(periods or {})
        self.n_solves = 0

    def full(self, theta_free: np.ndarray) -> np.ndarray:
        """(k, d_free) -> (k, d) with the fixed parameters filled in and angles wrapped."""
        theta = np.tile(self.lo, (theta_free.shape[0], 1))
        theta[:, self.free] = theta_free
        for i, period in self.periods.items():
            theta[:, i] = self.lo[i] + np.mod(theta[:, i] - self.lo[i], period)
        return theta

    def __call__(self, theta_free: np.ndarray) -> np.ndarray:
        theta = self.full(theta_free)
        inside = np.all((theta >= self.lo) & (theta <= self.hi), axis=1)
        lp = np.full(theta.shape[0], -np.inf)
        if inside.any():
            x = self.prior.field_from_params(torch.from_numpy(theta[inside]), torch.float64)
            self.n_solves += int(inside.sum())
            lp[inside] = self.log_likelihood(x).numpy()
        return lp


def initial_walkers(post: ParameterPosterior, n_walkers: int, rng: np.random.Generator,
                    init: str, init_factor: int, init_scale: float) -> np.ndarray:
    """Starting positions (n_walkers, d_free) of the ensemble (see the module docstring)."""
    lo, hi = post.lo[post.free], post.hi[post.free]
    candidates = lo + rng.random((init_factor * n_walkers, len(post.free))) * (hi - lo)
    ranked = candidates[np.argsort(-post(candidates))]
    if init == "prior":
        return ranked[:n_walkers]
    if init != "map":
        raise ConfigError(f"init={init!r} must be 'map' or 'prior'")
    res = scipy.optimize.minimize(lambda t: -post(t[None])[0], ranked[0], method="Nelder-Mead",
                                  options={"xatol": 1e-6, "fatol": 1e-3, "maxfev": 600})
    ball = res.x + init_scale * (hi - lo) * rng.standard_normal((n_walkers, len(post.free)))
    return reflect_into(ball, lo, hi, [i in post.periods for i in post.free])


def reflect_into(x: np.ndarray, lo: np.ndarray, hi: np.ndarray, periodic: list[bool]
                 ) -> np.ndarray:
    """Fold points (k, d) into the box by reflection at its walls (periodic coordinates are
    left as they are). Clipping would put every walker that overshoots a wall on the same
    value, and the stretch move, which only moves along differences of walkers, could then
    never leave that value: a MAP on a wall would freeze that parameter."""
    width = hi - lo
    y = np.mod(x - lo, 2 * width, where=width > 0, out=np.zeros_like(x))
    folded = lo + np.where(y > width, 2 * width - y, y)
    return np.where(np.asarray(periodic, dtype=bool), x, folded)


def sample_parameter_posterior(
    post: ParameterPosterior,
    n_steps: int = DEFAULT_MCMC_STEPS,
    n_walkers: int = DEFAULT_MCMC_WALKERS,
    seed: int = 0,
    burn_in: int | None = None,
    init: str = "map",
    init_factor: int = 4,
    init_scale: float = 1e-3,
    max_field_samples: int = 4000,
    threads: int | None = 1,
    progress: bool = False,
) -> MCMCResult:
    """Ensemble MCMC of any :class:`ParameterPosterior`, draws pushed to field statistics.

    ``burn_in`` defaults to n_steps // 2; ``threads``: torch intra-op threads while sampling
    (restored after; None: as is). Periodic parameters are reported modulo their period (R-hat
    and ESS too).
    """
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    burn = n_steps // 2 if burn_in is None else burn_in
    if not 0 <= burn < n_steps:
        raise ConfigError(f"burn_in={burn} must lie in [0, n_steps={n_steps})")
    free, d = post.free, len(post.lo)
    with torch_threads(threads):
        start = initial_walkers(post, n_walkers, rng, init, init_factor, init_scale)
        n_init = post.n_solves
        chain_free, accepted = ensemble_sample(post, start, n_steps, rng, progress=progress)
    chain = np.stack([post.full(c) for c in chain_free])  # (n_steps, W, d), angles wrapped
    kept = chain[burn:]
    rhat, ess = np.full(d, np.nan), np.full(d, np.nan)
    walkers_first = kept[..., free].transpose(1, 0, 2)
    rhat[free], ess[free] = split_rhat(walkers_first), effective_sample_size(walkers_first)
    draws = kept.reshape(-1, d)
    stride = max(1, len(draws) // max_field_samples)
    with torch_threads(threads):
        x = post.prior.field_from_params(torch.from_numpy(draws[::stride]), torch.float64)[:, 0]
    return MCMCResult(
        params=torch.from_numpy(draws), chain=torch.from_numpy(chain),
        mean_field=x.mean(0), std_field=x.std(0),
        rhat=rhat, ess=ess, acceptance=float(accepted[burn:].mean()),
        seconds=time.perf_counter() - t0, n_forward_solves=post.n_solves,
        info={"burn_in": burn, "n_walkers": n_walkers, "n_steps": n_steps, "seed": seed,
              "init_solves": n_init, "free_parameters": [post.prior.names[i] for i in free]},
    )


class ParameterMCMCReference(ReferencePosterior):
    """A reference posterior (kind ``"reference"``) by :func:`sample_parameter_posterior`, one
    chain per measurement for the first ``n_ref`` measurements.

    Subclasses say which problems fit (:meth:`fits`) and build the :class:`ParameterPosterior`
    of one measurement (:meth:`parameter_posterior`), whose likelihood uses only the measured
    entries of y (NaN = not measured, :mod:`invdiff.data.masking`). With ``cache`` set, each
    chain's summary is stored under :meth:`cache_key`, a fingerprint of all that determines the
    chain (a rerun reads it back; a changed problem or chain setting runs a new chain).
    """

    def __init__(self, n_ref: int = 2, n_steps: int = DEFAULT_MCMC_STEPS,
                 n_walkers: int = DEFAULT_MCMC_WALKERS,
                 burn_in: int | None = None, seed: int = 0, cache: str | None = None,
                 progress: bool = False) -> None:
        self.n_ref, self.n_steps, self.n_walkers = n_ref, n_steps, n_walkers
        self.burn_in, self.seed, self.progress = burn_in, seed, progress
        self.cache = cache

    def fits(self, prior: Any, forward_model: Any, noise_model: Any) -> str | None:
        missing = [a for a in ("bounds", "names", "field_from_params") if not hasattr(prior, a)]
        if missing:
            return (f"the prior {type(prior).__name__} is not parametric (it lacks "
                    f"{', '.join(missing)}); an MCMC reference samples a parametric prior's "
                    f"parameters")
        return None

    @abc.abstractmethod
    def parameter_posterior(self, prior: Any, forward_model: Any, noise_model: Any,
                            y: torch.Tensor, y_clean: torch.Tensor | None
                            ) -> ParameterPosterior:
        """The posterior of one measurement ``y (*y_shape)`` (``y_clean`` likewise or None)."""

    def __call__(self, prior: Any, forward_model: Any, noise_model: Any, y: torch.Tensor,
                 y_clean: torch.Tensor | None = None) -> ReferenceResult:
        why = self.fits(prior, forward_model, noise_model)
        if why is not None:
            raise ConfigError(f"{type(self).__name__}: {why}")
        check_gaps(torch.as_tensor(y), True, "y")  # NaN = not measured; the likelihoods skip it
        rows = []
        for m in range(min(self.n_ref, len(y))):
            clean = None if y_clean is None else y_clean[m]
            rows.append(self._cached(
                lambda m=m, clean=clean: self.cache_key(prior, forward_model, noise_model, y[m],
                                                        clean, m),
                lambda m=m, clean=clean: self._chain(prior, forward_model, noise_model, y[m],
                                                     clean, m)))
        shape = tuple(prior.shape)
        mean = torch.stack([torch.from_numpy(r["mean"]).reshape(shape) for r in rows])
        std = torch.stack([torch.from_numpy(r["std"]).reshape(shape) for r in rows])
        return ReferenceResult(
            index=list(range(len(rows))), mean=mean, std=std,
            seconds=float(np.mean([r["seconds"] for r in rows])),
            info={"rhat_max": float(max(r["rhat_max"] for r in rows)),
                  "ess_min": float(min(r["ess_min"] for r in rows)),
                  "solves": float(np.mean([r["solves"] for r in rows])),
                  "steps": self.n_steps, "walkers": self.n_walkers, "sampled": True})

    def chain_options(self, m: int) -> dict[str, Any]:
        """The options of :func:`sample_parameter_posterior` for measurement ``m`` (all that
        shape the chain, defaults spelled out so that they enter :meth:`cache_key`)."""
        return {"n_steps": self.n_steps, "n_walkers": self.n_walkers, "seed": self.seed + m,
                "burn_in": self.burn_in, "init": "map", "init_factor": 4, "init_scale": 1e-3,
                "max_field_samples": 4000}

    def cache_key(self, prior: Any, forward_model: Any, noise_model: Any, y: torch.Tensor,
                  y_clean: torch.Tensor | None, m: int) -> str:
        """The fingerprint (:func:`invdiff.integrity.fingerprint`) under which the chain of
        measurement ``m`` is cached: the sampler (:data:`SAMPLER`), this reference's class, its
        chain options, each component's class and plain settings (prior ranges, forward model
        settings, noise level), the prior's box and the measurement ``y`` (and ``y_clean``,
        which may set the noise std)."""
        spec = {"sampler": SAMPLER, "reference": type(self).__module__ + "."
                + type(self).__qualname__, "chain": self.chain_options(m),
                "components": _default_spec(prior, forward_model, noise_model)}
        return fingerprint(spec, torch.as_tensor(prior.bounds, dtype=torch.float64),
                           torch.as_tensor(y, dtype=torch.float64),
                           None if y_clean is None else torch.as_tensor(y_clean,
                                                                        dtype=torch.float64))

    def _chain(self, prior: Any, forward_model: Any, noise_model: Any, y: torch.Tensor,
               y_clean: torch.Tensor | None, m: int) -> dict[str, np.ndarray]:
        t0 = time.perf_counter()
        post = self.parameter_posterior(prior, forward_model, noise_model, y, y_clean)
        res = sample_parameter_posterior(post, progress=self.progress, **self.chain_options(m))
        res.seconds = time.perf_counter() - t0
        return res.summary_arrays()

    def _cached(self, key: Callable[[], str], compute: Callable[[], dict[str, np.ndarray]]
                ) -> dict[str, np.ndarray]:
        if self.cache is None:
            return compute()
        name = f"{type(self).__name__}-{self.n_steps}x{self.n_walkers}-{key()}.npz"
        return cached_arrays(Path(self.cache) / name, compute)
