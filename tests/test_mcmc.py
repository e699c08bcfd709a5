"""The core ensemble MCMC (invdiff.evaluation.mcmc): diagnostics on chains with known answers (and
against ArviZ), emcee's stretch move on a Gaussian and its reproducibility, a posterior with its
mode on a wall of the box, the cache key of the MCMC references."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from invdiff.errors import ConfigError
from invdiff.evaluation.mcmc import (
    MCMCResult,
    ParameterMCMCReference,
    ParameterPosterior,
    ensemble_sample,
    initial_walkers,
    reflect_into,
    sample_parameter_posterior,
)
from invdiff.evaluation.mcmc_diagnostics import effective_sample_size, split_rhat


def ar1(phi: float, m: int, n: int, seed: int) -> np.ndarray:
    """m stationary AR(1) chains x_t = phi x_t-1 + e_t: integrated time (1 + phi) / (1 - phi)."""
    rng = np.random.default_rng(seed)
    e = rng.standard_normal((m, n))
    x = np.empty((m, n))
    x[:, 0] = e[:, 0] / np.sqrt(1 - phi**2)
    for t in range(1, n):
        x[:, t] = phi * x[:, t - 1] + e[:, t]
    return x


def test_iid_draws_have_full_ess_and_unit_rhat():
    draws = np.random.default_rng(0).standard_normal((4, 2000))
    assert effective_sample_size(draws) == pytest.approx(8000, rel=0.1)
    assert abs(split_rhat(draws) - 1) < 0.01


@pytest.mark.parametrize("phi", [0.5, 0.9])
def test_ar1_ess_matches_the_integrated_autocorrelation_time(phi):
    chains = ar1(phi, 4, 20000, seed=1)
    expected = chains.size * (1 - phi) / (1 + phi)
    assert effective_sample_size(chains) == pytest.approx(expected, rel=0.15)


def classic_split_rhat(chains: np.ndarray) -> float:
    """BDA3's split R-hat of (m, n) draws, written out: sqrt(var+ / W) over the 2m halves."""
    half = chains.shape[1] // 2
    c = np.concatenate([chains[:, :half], chains[:, -half:]])
    w, b_over_n = c.var(axis=1, ddof=1).mean(), c.mean(axis=1).var(ddof=1)
    return float(np.sqrt(((half - 1) / half * w + b_over_n) / w))


@pytest.mark.parametrize("phi", [0.5, 0.9])
def test_diagnostics_are_arviz_and_match_the_ar1_truth(phi):
    """The wrappers return ArviZ's numbers (bulk ESS, split R-hat; chains on axis 0, draws on
    axis 1), and these match independent truths: the AR(1) ESS m n (1 - phi) / (1 + phi)
    within 5 % (on 64 chains of 20 000 draws the estimate's relative spread over seeds is
    0.6 % at phi = 0.5 and 1.5 % at phi = 0.9) and R-hat the written-out split formula."""
    from arviz_stats.base import array_stats

    chains = ar1(phi, 64, 20000, seed=11)
    ess, rhat = effective_sample_size(chains), split_rhat(chains)
    assert ess == pytest.approx(float(array_stats.ess(chains, chain_axis=0, draw_axis=1,
                                                      method="bulk")), rel=1e-12)
    assert rhat == pytest.approx(float(array_stats.rhat(chains, chain_axis=0, draw_axis=1,
                                                        method="split")), rel=1e-12)
    assert ess == pytest.approx(chains.size * (1 - phi) / (1 + phi), rel=0.05)
    assert rhat == pytest.approx(classic_split_rhat(chains), rel=1e-12)
    # (m, n, d): each scalar on its own, as if passed alone
    both = np.stack([chains, ar1(0.2, 64, 20000, seed=12)], axis=-1)
    np.testing.assert_allclose(effective_sample_size(both)[0], ess, rtol=1e-12)
    np.testing.assert_allclose(split_rhat(both)[0], rhat, rtol=1e-12)


def test_rhat_flags_chains_that_disagree():
    draws = np.random.default_rng(2).standard_normal((4, 500))
    draws[0] += 1.0  # one chain stuck elsewhere
    assert split_rhat(draws) > 1.1
    trend = draws[1:] - draws[1:].mean() + np.linspace(0, 3, 500)  # drift within each chain
    assert split_rhat(trend) > 1.1  # split halves see it
    both = np.stack([draws, draws * 0 + np.random.default_rng(3).standard_normal((4, 500))], -1)
    assert split_rhat(both).shape == (2,) and effective_sample_size(both).shape == (2,)


def test_ensemble_sample_samples_a_correlated_gaussian():
    cov = np.array([[1.0, 0.9], [0.9, 1.0]])
    prec, mean = np.linalg.inv(cov), np.array([1.0, -2.0])

    def log_prob(t):
        d = t - mean
        return -0.5 * np.einsum("ki,ij,kj->k", d, prec, d)

    rng = np.random.default_rng(4)
    chain, acc = ensemble_sample(log_prob, rng.standard_normal((20, 2)), 3000, rng)
    assert chain.shape == (3000, 20, 2) and acc.shape == (3000, 20)
    draws = chain[500:].reshape(-1, 2)
    ess = effective_sample_size(chain[500:].transpose(1, 0, 2))
    np.testing.assert_allclose(draws.mean(0), mean, atol=5 / np.sqrt(ess.min()))
    np.testing.assert_allclose(np.cov(draws.T), cov, atol=0.1)
    assert 0.2 < acc[500:].mean() < 0.9


def test_ensemble_sample_is_reproducible_and_batched():
    """Equal generator states give equal chains, other seeds other chains; ``log_prob`` gets
    one half of the ensemble per call (vectorised: one batched likelihood call per half),
    proposals outside the support (-inf) are rejected, and an accepted move is one that moved."""
    batches = []

    def log_prob(t):
        batches.append(len(t))
        return np.where(np.all(np.abs(t) < 3, axis=1), -0.5 * np.square(t).sum(1), -np.inf)

    start = np.random.default_rng(0).uniform(-1, 1, (10, 3))
    c1, a1 = ensemble_sample(log_prob, start, 50, np.random.default_rng(5))
    assert batches == [10] + [5] * 100
    c2, a2 = ensemble_sample(log_prob, start, 50, np.random.default_rng(5))
    c3, _ = ensemble_sample(log_prob, start, 50, np.random.default_rng(6))
    np.testing.assert_array_equal(c1, c2)
    np.testing.assert_array_equal(a1, a2)
    assert not np.array_equal(c1, c3)
    assert np.all(np.abs(c1) < 3)
    moved = np.any(np.diff(np.concatenate([start[None], c1]), axis=0) != 0, axis=-1)
    np.testing.assert_array_equal(a1, moved)
    with pytest.raises(ConfigError, match="n_walkers"):
        ensemble_sample(log_prob, start[:7], 5, np.random.default_rng(0))


def test_summary_arrays_skip_fixed_parameters():
    """The cached summary: fields as float32, worst R-hat / ESS over the free parameters
    (NaN marks a fixed one), cost."""
    res = MCMCResult(params=torch.zeros(1, 4), chain=torch.zeros(1, 2, 4),
                     mean_field=torch.ones(3, 3, dtype=torch.float64),
                     std_field=torch.full((3, 3), 0.5, dtype=torch.float64),
                     rhat=np.array([1.01, np.nan, 1.08, 1.02]),
                     ess=np.array([400.0, np.nan, 250.0, 300.0]),
                     acceptance=0.3, seconds=12.5, n_forward_solves=6400)
    out = res.summary_arrays()
    assert out["mean"].dtype == np.float32 and out["std"].shape == (3, 3)
    assert float(out["rhat_max"]) == 1.08 and float(out["ess_min"]) == 250.0
    assert float(out["seconds"]) == 12.5 and int(out["solves"]) == 6400


class _BoxPrior:
    """Two parameters uniform on [0, 1]^2; the 'field' is the parameters themselves."""

    names = ("a", "b")
    bounds = torch.tensor([[0.0, 1.0], [0.0, 1.0]], dtype=torch.float64)

    @staticmethod
    def field_from_params(params, dtype=None):
        return torch.as_tensor(params).reshape(-1, 1, 1, 2)


def test_map_on_a_wall_does_not_freeze_a_parameter():
    """p(a, b) ∝ exp(50 a) N(b; 0.5, 0.1^2) on the unit box: the MAP sits on the wall a = 1.
    The walkers start spread around it (reflected, not clipped onto one value, which the
    stretch move could never leave), and the draws of a match the truncated exponential:
    mean 1 - 1/50, std 1/50."""
    def log_lik(x):
        a, b = x[:, 0, 0, 0], x[:, 0, 0, 1]
        return 50 * a - 0.5 * ((b - 0.5) / 0.1) ** 2

    post = ParameterPosterior(log_lik, _BoxPrior())
    start = initial_walkers(post, 16, np.random.default_rng(0), "map", 4, 1e-3)
    assert np.all((start >= 0) & (start <= 1)) and len(np.unique(start[:, 0])) == 16
    res = sample_parameter_posterior(post, n_steps=3000, n_walkers=16, seed=1)
    a = res.params[:, 0].numpy()
    assert a.mean() == pytest.approx(1 - 1 / 50, abs=0.004)
    assert a.std() == pytest.approx(1 / 50, rel=0.15)
    assert np.all(np.isfinite(res.rhat))


def test_reflect_into_folds_at_walls_and_keeps_periodic_coordinates():
    """Reflection keeps overshooting walkers distinct; a periodic coordinate (e.g. an angle
    whose optimum the Nelder-Mead start found just below 0) is not clipped onto a wall, where
    every walker would share one value for good."""
    x = np.array([[1.2, -0.3], [-0.1, 0.5], [0.4, 3.2]])
    out = reflect_into(x, np.zeros(2), np.ones(2), [False, True])
    np.testing.assert_allclose(out[:, 0], [0.8, 0.1, 0.4])
    np.testing.assert_allclose(out[:, 1], x[:, 1])


def test_sample_parameter_posterior_is_reproducible_for_a_seed():
    def log_lik(x):
        return -0.5 * ((x[:, 0, 0] - 0.4) / 0.05).square().sum(1)

    runs = [sample_parameter_posterior(ParameterPosterior(log_lik, _BoxPrior()), n_steps=40,
                                       n_walkers=8, seed=s) for s in (3, 3, 4)]
    torch.testing.assert_close(runs[0].chain, runs[1].chain, rtol=0, atol=0)
    assert not torch.equal(runs[0].chain, runs[2].chain)


class _ScaledBoxPrior:
    """Two parameters uniform on a box; the field is ``scale`` times the parameters."""

    names = ("a", "b")

    def __init__(self, scale: float = 1.0, high: float = 1.0) -> None:
        self.scale, self.high, self.shape = scale, high, (1, 1, 2)
        self.bounds = torch.tensor([[0.0, high], [0.0, 1.0]], dtype=torch.float64)

    def field_from_params(self, params, dtype=None):
        return self.scale * torch.as_tensor(params).reshape(-1, 1, 1, 2)


class _Identity:
    def __call__(self, x):
        return x


class _Noise:
    def __init__(self, std: float) -> None:
        self.std = std


class _ToyReference(ParameterMCMCReference):
    """y = field + N(0, std^2) noise."""

    def parameter_posterior(self, prior, forward_model, noise_model, y, y_clean):
        def log_lik(x):
            return -0.5 * (forward_model(x) - y).flatten(1).square().sum(1) / noise_model.std**2

        return ParameterPosterior(log_lik, prior)


def test_cache_key_covers_what_determines_the_chain(tmp_path):
    """The key changes with the noise level, a prior parameter, the prior's range, the
    measurement and the chain settings (so a stale chain is never read back), and is equal for
    equal inputs built anew; a rerun reads its chain back, a changed noise runs a new one."""
    y = torch.tensor([[[0.3, 0.6]]], dtype=torch.float64)
    ref = _ToyReference(n_ref=1, n_steps=20, n_walkers=8, cache=str(tmp_path))

    def key(prior=None, noise=None, y_=y, reference=ref):
        return reference.cache_key(prior or _ScaledBoxPrior(), _Identity(), noise or _Noise(0.1),
                                   y_, None, 0)

    base = key()
    assert key() == base
    others = [key(noise=_Noise(0.2)), key(prior=_ScaledBoxPrior(scale=2.0)),
              key(prior=_ScaledBoxPrior(high=0.9)), key(y_=y + 1e-9),
              key(reference=_ToyReference(n_ref=1, n_steps=21, n_walkers=8)),
              key(reference=_ToyReference(n_ref=1, n_steps=20, n_walkers=8, seed=1))]
    assert len({base, *others}) == len(others) + 1
    assert ref.cache_key(_ScaledBoxPrior(), _Identity(), _Noise(0.1), y, y, 0) != base

    first = ref(_ScaledBoxPrior(), _Identity(), _Noise(0.1), y[None])
    again = ref(_ScaledBoxPrior(), _Identity(), _Noise(0.1), y[None])
    assert again.seconds == first.seconds and len(list(tmp_path.glob("*.npz"))) == 1
    ref(_ScaledBoxPrior(), _Identity(), _Noise(0.2), y[None])
    assert len(list(tmp_path.glob("*.npz"))) == 2
