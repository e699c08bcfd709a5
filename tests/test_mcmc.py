"""The core ensemble MCMC (invdiff.evaluation.mcmc): diagnostics on chains with known answers, the
stretch move on a Gaussian, a posterior with its mode on a wall of the box."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from invdiff.evaluation.mcmc import (
    MCMCResult,
    ParameterPosterior,
    initial_walkers,
    reflect_into,
    sample_parameter_posterior,
    stretch_move,
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


def test_rhat_flags_chains_that_disagree():
    draws = np.random.default_rng(2).standard_normal((4, 500))
    draws[0] += 1.0  # one chain stuck elsewhere
    assert split_rhat(draws) > 1.1
    trend = draws[1:] - draws[1:].mean() + np.linspace(0, 3, 500)  # drift within each chain
    assert split_rhat(trend) > 1.1  # split halves see it
    both = np.stack([draws, draws * 0 + np.random.default_rng(3).standard_normal((4, 500))], -1)
    assert split_rhat(both).shape == (2,) and effective_sample_size(both).shape == (2,)


def test_stretch_move_samples_a_correlated_gaussian():
    cov = np.array([[1.0, 0.9], [0.9, 1.0]])
    prec, mean = np.linalg.inv(cov), np.array([1.0, -2.0])

    def log_prob(t):
        d = t - mean
        return -0.5 * np.einsum("ki,ij,kj->k", d, prec, d)

    rng = np.random.default_rng(4)
    chain, acc = stretch_move(log_prob, rng.standard_normal((20, 2)), 3000, rng)
    draws = chain[500:].reshape(-1, 2)
    ess = effective_sample_size(chain[500:].transpose(1, 0, 2))
    np.testing.assert_allclose(draws.mean(0), mean, atol=5 / np.sqrt(ess.min()))
    np.testing.assert_allclose(np.cov(draws.T), cov, atol=0.1)
    assert 0.2 < acc[500:].mean() < 0.9


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
