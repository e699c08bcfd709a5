"""The inclusion MCMC reference posterior on known cases, directly and as the registered
reference ``inclusion-mcmc``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from invdiff_elasticity import CircularInclusionPrior, ElasticityFEM, reference_posterior
from invdiff_elasticity.mcmc import relative_noise_std
from invdiff_elasticity.reference import gaussian_noise_std

import invdiff
from invdiff.errors import ConfigError, DataError
from invdiff.reference import GaussianNoise


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
    # and the truth must lie inside the posterior's central 99.9 % range of each parameter.
    # At 3000 steps the worst R-hat of a chain lies near the 1.05 bar whatever the seed (seeds
    # 2-6: 1.034-1.059 with emcee, 1.047-1.051 with a NumPy stretch move), so this is a check at
    # one seed, not a rate; the truth was inside the range at all ten
    n = 16
    prior, fem = CircularInclusionPrior(n=n), ElasticityFEM(grid=n)
    truth = torch.tensor([0.35, 0.55, 0.14, 2.5], dtype=torch.float64)
    y_clean = fem(prior.field_from_params(truth, torch.float64))
    s = relative_noise_std(y_clean, 0.01)
    y = y_clean + s * torch.randn(y_clean.shape, generator=torch.Generator().manual_seed(7),
                                  dtype=torch.float64)
    res = reference_posterior(y, s, prior, fem, n_steps=3000, n_walkers=16, seed=3)
    assert bool((res.rhat < 1.05).all()) and bool((res.ess > 200).all()), (res.rhat, res.ess)
    lo, hi = torch.quantile(res.params, torch.tensor([5e-4, 1 - 5e-4], dtype=torch.float64), 0)
    assert bool(((truth > lo) & (truth < hi)).all()), (lo, truth, hi)


def test_registered_reference_matches_the_direct_chain(contrast_only, tmp_path):
    """invdiff.create("reference", "inclusion-mcmc") runs the same chain as
    reference_posterior (seed + m for measurement m), and a rerun reads its cache."""
    prior, fem, y, s, mean, std = contrast_only
    ref = invdiff.create("reference", "inclusion-mcmc", n_ref=1, n_steps=300, n_walkers=8,
                         seed=3, cache=str(tmp_path))
    noise = GaussianNoise(std=s)
    assert ref.fits(prior, fem, noise) is None and prior.reference == "inclusion-mcmc"
    out = ref(prior, fem, noise, torch.cat([y, y]))
    direct = reference_posterior(y[0], s, prior, fem, n_steps=300, n_walkers=8, seed=3)
    assert out.index == [0] and out.mean.shape == (1, 1, 10, 10)
    torch.testing.assert_close(out.mean[0, 0], direct.mean_field.float(), rtol=0, atol=0)
    torch.testing.assert_close(out.std[0, 0], direct.std_field.float(), rtol=0, atol=0)
    assert len(list(tmp_path.glob("*.npz"))) == 1
    again = ref(prior, fem, noise, y)
    assert again.seconds == out.seconds  # read back, not recomputed
    assert "not the gaussian" in ref.fits(prior, fem, object())


def test_noise_std_of_a_relative_level():
    y_clean = torch.full((1, 4, 4), 2.0, dtype=torch.float64)
    noise = GaussianNoise(level=0.1)
    assert gaussian_noise_std(noise, y_clean * 5, y_clean) == pytest.approx(0.2)
    # without the clean signal: E|y|^2 = (1 + level^2) |y_clean|^2
    y = y_clean * (1 + 0.1**2) ** 0.5
    assert gaussian_noise_std(noise, y, None) == pytest.approx(0.2)
    assert gaussian_noise_std(GaussianNoise(std=0.3), y, None) == 0.3


def test_cache_key_changes_with_the_noise_and_the_prior(contrast_only):
    """A chain cached for one noise level or prior range is not read back for another: the
    key of inclusion-mcmc covers the noise model's level / std, the prior's ranges and the
    forward model's settings, besides the measurement and the chain settings."""
    prior, fem, y, s, _, _ = contrast_only
    ref = invdiff.create("reference", "inclusion-mcmc", n_ref=1, n_steps=300, n_walkers=8)

    def key(prior=prior, fem=fem, noise=None):
        return ref.cache_key(prior, fem, noise or GaussianNoise(level=0.01), y[0], None, 0)

    wider = CircularInclusionPrior(n=10, centre_range=(0.5, 0.5), radius_range=(0.2, 0.2),
                                   contrast_range=(1.5, 7.0))
    same = CircularInclusionPrior(n=10, centre_range=(0.5, 0.5), radius_range=(0.2, 0.2),
                                  contrast_range=(1.5, 6.0))
    keys = {key(), key(noise=GaussianNoise(level=0.02)), key(noise=GaussianNoise(std=s)),
            key(prior=wider), key(fem=ElasticityFEM(grid=10, compression=0.02))}
    assert len(keys) == 5 and key(prior=same) == key()
