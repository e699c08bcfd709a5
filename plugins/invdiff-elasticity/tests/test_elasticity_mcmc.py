"""Diagnostics on chains with known answers; MCMC reference posterior on known cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from invdiff_elasticity import (
    CircularInclusionPrior,
    ElasticityFEM,
    effective_sample_size,
    reference_posterior,
    split_rhat,
)
from invdiff_elasticity.mcmc import MCMCResult, relative_noise_std, stretch_move

from invdiff.errors import ConfigError, DataError


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


@pytest.fixture(scope="module")
def contrast_only():
    """Centre and radius fixed: a 1-parameter posterior over the contrast, known on a grid."""
    n = 10
    prior = CircularInclusionPrior(n=n, centre_range=(0.5, 0.5), radius_range=(0.2, 0.2),
                                   contrast_range=(1.5, 6.0))
    fem = ElasticityFEM(grid=n)
    truth = torch.tensor([[0.5, 0.5, 0.2, 3.0]], dtype=torch.float64)
    y_clean = fem(prior.field_from_params(truth, torch.float64))
    s = relative_noise_std(y_clean, 0.01)
    y = y_clean + s * torch.randn(y_clean.shape, generator=torch.Generator().manual_seed(5),
                                  dtype=torch.float64)
    grid = torch.linspace(1.5, 6.0, 1501, dtype=torch.float64)
    theta = torch.cat([truth[:, :3].expand(len(grid), 3), grid[:, None]], 1)
    loglik = -0.5 * (fem(prior.field_from_params(theta, torch.float64)) - y).flatten(1).square(
        ).sum(1) / s**2
    w = torch.softmax(loglik, 0)  # uniform prior on the grid
    mean = float((w * grid).sum())
    std = float((w * (grid - mean) ** 2).sum().sqrt())
    return prior, fem, y, s, mean, std


def test_reference_posterior_matches_grid_posterior(contrast_only):
    prior, fem, y, s, mean, std = contrast_only
    assert 0.05 < std < 1.0  # informative but not degenerate: a meaningful comparison
    res = reference_posterior(y[0], s, prior, fem, n_steps=1000, n_walkers=8, seed=0)
    c = res.params[:, 3].numpy()
    assert np.all(res.params[:, :3].numpy() == [0.5, 0.5, 0.2])  # fixed stay fixed
    assert res.ess[3] > 100 and res.rhat[3] < 1.1 and np.isnan(res.rhat[0])
    assert c.mean() == pytest.approx(mean, abs=4 * std / np.sqrt(res.ess[3]))
    assert c.std() == pytest.approx(std, rel=0.2)  # SE of a std: ~1/sqrt(2 ESS)
    # the pushed-forward fields: mu = 1 + (contrast - 1) * area fraction, linear in contrast
    frac = prior.field_from_params(torch.tensor([0.5, 0.5, 0.2, 2.0]), torch.float64)[0, 0] - 1
    torch.testing.assert_close(res.mean_field, 1 + (float(c.mean()) - 1) * frac, rtol=0,
                               atol=1e-9)
    torch.testing.assert_close(res.std_field, float(c.std(ddof=1)) * frac, rtol=1e-3,
                               atol=1e-9)
    assert res.n_forward_solves >= 8 * 1000 and res.seconds > 0
    assert res.chain.shape == (1000, 8, 4)


def test_low_noise_posterior_concentrates_at_the_truth():
    n = 10
    prior, fem = CircularInclusionPrior(n=n), ElasticityFEM(grid=n)
    truth = torch.tensor([0.42, 0.61, 0.16, 3.5], dtype=torch.float64)
    y_clean = fem(prior.field_from_params(truth, torch.float64))
    s = relative_noise_std(y_clean, 0.001)
    y = y_clean + s * torch.randn(y_clean.shape, generator=torch.Generator().manual_seed(6),
                                  dtype=torch.float64)
    res = reference_posterior(y, s, prior, fem, n_steps=200, n_walkers=12, seed=1)
    mean, std = res.params.mean(0), res.params.std(0)
    widths = prior.bounds[:, 1] - prior.bounds[:, 0]
    assert bool((std < 0.02 * widths).all()), std
    assert bool(((mean - truth).abs() < 6 * std + 1e-3 * widths).all()), (mean, truth, std)
    x_true = prior.field_from_params(truth, torch.float64)[0, 0]
    assert float((res.mean_field - x_true).abs().mean()) < 0.05


def test_reference_posterior_input_errors(contrast_only):
    prior, fem, y, s, _, _ = contrast_only
    with pytest.raises(DataError, match="one measurement"):
        reference_posterior(torch.ones(2, 1, 10, 10), s, prior, fem, n_steps=2)
    with pytest.raises(DataError, match="noise_std"):
        reference_posterior(y, 0.0, prior, fem, n_steps=2)
    with pytest.raises(ConfigError, match="n_walkers"):
        reference_posterior(y, s, prior, fem, n_steps=4, n_walkers=3)
    with pytest.raises(ConfigError, match="burn_in"):
        reference_posterior(y, s, prior, fem, n_steps=4, burn_in=4)


@pytest.mark.slow
def test_four_parameter_reference_converges():
    # the full 4-parameter problem at moderate noise: the diagnostics must report convergence
    # and the truth must lie inside the posterior's central 99.9 % range of each parameter
    n = 16
    prior, fem = CircularInclusionPrior(n=n), ElasticityFEM(grid=n)
    truth = torch.tensor([0.35, 0.55, 0.14, 2.5], dtype=torch.float64)
    y_clean = fem(prior.field_from_params(truth, torch.float64))
    s = relative_noise_std(y_clean, 0.01)
    y = y_clean + s * torch.randn(y_clean.shape, generator=torch.Generator().manual_seed(7),
                                  dtype=torch.float64)
    res = reference_posterior(y, s, prior, fem, n_steps=3000, n_walkers=16, seed=2)
    assert bool((res.rhat < 1.05).all()) and bool((res.ess > 200).all()), (res.rhat, res.ess)
    lo, hi = torch.quantile(res.params, torch.tensor([5e-4, 1 - 5e-4], dtype=torch.float64), 0)
    assert bool(((truth > lo) & (truth < hi)).all()), (lo, truth, hi)


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
    from invdiff_elasticity.mcmc import (
        ParameterPosterior,
        initial_walkers,
        sample_parameter_posterior,
    )

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
    from invdiff_elasticity.mcmc import reflect_into

    x = np.array([[1.2, -0.3], [-0.1, 0.5], [0.4, 3.2]])
    out = reflect_into(x, np.zeros(2), np.ones(2), [False, True])
    np.testing.assert_allclose(out[:, 0], [0.8, 0.1, 0.4])
    np.testing.assert_allclose(out[:, 1], x[:, 1])
