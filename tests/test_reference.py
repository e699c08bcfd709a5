"""The reference linear-Gaussian problem against independent computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import invdiff
from invdiff.errors import ConfigError, DataError
from invdiff.reference import (
    GaussianNoise,
    LinearBlur,
    exact_posterior,
    make_problem,
)
from invdiff.testing import check_forward_model, check_noise_model, check_prior


def dense_bayes(m0, c, a, s, y):
    """Textbook precision-form update, written independently of invdiff (numpy, float64):
    S = (C^-1 + A^T A / s^2)^-1, m = S (C^-1 m0 + A^T y / s^2)."""
    ci = np.linalg.inv(c)
    prec = ci + a.T @ a / s**2
    cov = np.linalg.inv(prec)
    mean = cov @ (ci @ m0 + a.T @ y / s**2)
    return mean, cov


@pytest.mark.parametrize(
    "kw",
    [dict(n=6, blur=1.0, mask_fraction=0.6), dict(n=6, blur=0.7, subsample=2, mask_fraction=1.0)],
)
def test_posterior_matches_dense_bayesian_update(kw, gen):
    prob = make_problem(noise_level=0.1, length_scale=0.3, mean=0.5, **kw)
    x = prob.prior.sample(3, generator=gen(0))
    y = prob.noise_model(prob.forward_model(x), generator=gen(1))
    m0 = prob.prior.mean_vector().numpy()
    c = prob.prior.covariance_matrix().numpy()
    a = prob.forward_model.matrix().numpy()
    post_mean = prob.posterior.mean(y.double())
    for i in range(3):
        mean, cov = dense_bayes(m0, c, a, prob.noise_model.std, y[i].double().flatten().numpy())
        np.testing.assert_allclose(post_mean[i].flatten().numpy(), mean, rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose(prob.posterior.cov.numpy(), cov, rtol=1e-5, atol=1e-9)
    assert prob.posterior.std.shape == (1, 6, 6)


def test_noised_score_matches_monte_carlo_tweedie(gen):
    """grad log p_sigma(x|y) = E[x0 - x | x] / sigma^2 under x0 ~ p(x0|y), x|x0 ~ N(x0, s^2 I):
    a self-normalised Monte Carlo estimate from exact posterior samples, independent of the
    closed form -(S + sigma^2 I)^-1 (x - m)."""
    prob = make_problem(n=4, blur=1.0, mask_fraction=0.7, noise_level=0.2)
    x_true = prob.prior.sample(1, generator=gen(2))
    y = prob.noise_model(prob.forward_model(x_true), generator=gen(3)).double()
    sigma = 1.0
    x0 = prob.posterior.sample(y, 400_000, generator=gen(4))[0].flatten(1)  # (K, D)
    x = (prob.posterior.mean(y)[0].flatten() + sigma * torch.randn(16, generator=gen(5),
                                                                    dtype=torch.float64))
    logw = -((x[None] - x0) ** 2).sum(1) / (2 * sigma**2)
    w = torch.softmax(logw, 0)
    mc = (w[:, None] * (x0 - x[None])).sum(0) / sigma**2
    exact = prob.posterior.score_fn()(x.reshape(1, 1, 4, 4), y, torch.tensor([sigma]))
    exact = exact.flatten()
    ess = 1.0 / float((w**2).sum())
    assert ess > 2e4, f"importance weights degenerate (ESS {ess:.0f})"
    assert torch.linalg.norm(mc - exact) / torch.linalg.norm(exact) < 0.03


def test_posterior_samples_have_the_exact_moments(gen):
    prob = make_problem(n=4, noise_level=0.1)
    y = prob.noise_model(prob.forward_model(prob.prior.sample(1, generator=gen(0))),
                         generator=gen(1)).double()
    s = prob.posterior.sample(y, 100_000, generator=gen(2))[0].flatten(1)
    np.testing.assert_allclose(torch.cov(s.T).numpy(), prob.posterior.cov.numpy(), atol=3e-3 *
                               float(prob.posterior.cov.diagonal().max()) * 10)
    err = (s.mean(0) - prob.posterior.mean(y)[0].flatten()).abs().max()
    assert err < 5 * float(prob.posterior.std.max()) / math.sqrt(1e5)


def test_prior_samples_have_the_prior_covariance(gen):
    prior = invdiff.create("prior", "gaussian-field", n=4, variance=2.0, length_scale=0.25,
                           mean=1.0, dtype="float64")
    x = prior.sample(100_000, generator=gen(0)).flatten(1)
    c = prior.covariance_matrix()
    assert torch.allclose(torch.cov(x.T), c, atol=0.05)
    assert abs(float(x.mean()) - 1.0) < 0.02
    # squared-exponential: neighbours one pixel apart at distance 1/4
    assert math.isclose(float(c[0, 1]), 2.0 * math.exp(-(0.25**2) / (2 * 0.25**2)), rel_tol=1e-9)


def test_blur_matches_direct_convolution(gen):
    fwd = LinearBlur(n=7, blur=1.3)
    x = torch.randn(2, 1, 7, 7, generator=gen(0), dtype=torch.float64)
    y = fwd(x)
    i = torch.arange(7, dtype=torch.float64)
    k = torch.exp(-((i[:, None] - i[None]) ** 2) / (2 * 1.3**2))
    k = k / k.sum(1, keepdim=True)  # no truncation: at n=7 the tail stays above 1e-12
    # y[r, c] = sum_{p, q} k[r, p] k[c, q] x[p, q]
    direct = torch.einsum("rp,cq,bpq->brc", k, k, x[:, 0])
    assert torch.allclose(y[:, 0], direct, atol=1e-12)


def test_mask_and_subsampling():
    fwd = LinearBlur(n=8, blur=1.0, mask_fraction=0.5, mask_seed=3)
    y = fwd(torch.ones(1, 1, 8, 8))
    assert torch.equal(y[0, 0] == 0, ~fwd.mask)
    assert 0.3 < fwd.mask.float().mean() < 0.7
    sub = LinearBlur(n=8, subsample=3)
    assert sub.output_shape((1, 8, 8)) == (1, 3, 3)
    assert sub(torch.randn(2, 1, 8, 8)).shape == (2, 1, 3, 3)


def test_relative_noise_scales_with_each_sample_rms(gen):
    noise = GaussianNoise(level=0.1)
    y_clean = torch.cat([torch.ones(1, 1, 64, 64), 10 * torch.ones(1, 1, 64, 64)])
    y = noise(y_clean, generator=gen(0))
    std = (y - y_clean).flatten(1).std(1)
    assert torch.allclose(std, torch.tensor([0.1, 1.0]), rtol=0.05)


def test_contract_kit_passes_on_reference_components(gen):
    prob = make_problem(n=6, subsample=2)
    x = check_prior(prob.prior)
    y = check_forward_model(prob.forward_model, x)
    check_noise_model(prob.noise_model, y)
    check_noise_model(GaussianNoise(level=0.05), y)


def test_errors_name_the_problem():
    prob = make_problem(n=4)
    with pytest.raises(DataError, match=r"expected \(B, 1, 4, 4\)"):
        prob.forward_model(torch.zeros(2, 1, 5, 5))
    with pytest.raises(DataError, match="all NaN"):  # NaN = not measured; here nothing is
        prob.posterior.mean(torch.full((1, 1, 4, 4), float("nan")))
    with pytest.raises(DataError, match="infinite"):
        prob.posterior.mean(torch.full((1, 1, 4, 4), float("inf")))
    with pytest.raises(ConfigError, match="absolute std"):
        exact_posterior(prob.prior, prob.forward_model, GaussianNoise(level=0.05))
    with pytest.raises(ConfigError, match="not linear-Gaussian"):
        exact_posterior(object(), prob.forward_model, prob.noise_model)


def test_references_are_registered_and_the_closed_form_is_one_of_them():
    from invdiff.reference import GaussianNoise

    assert {"linear-gaussian", "inclusion-mcmc", "spheroid-mcmc", "oce-algebraic"} <= set(
        invdiff.available("reference"))
    prob = make_problem(n=4, mask_fraction=0.5, noise_level=0.1)
    y = prob.forward_model(prob.prior.sample(3, torch.Generator().manual_seed(0)))
    ref = invdiff.create("reference", "linear-gaussian", n_samples=2000)
    assert prob.prior.reference == "linear-gaussian"
    out = ref(prob.prior, prob.forward_model, prob.noise_model, y)
    assert out.index == [0, 1, 2]
    torch.testing.assert_close(out.mean, prob.posterior.mean(y.double()), rtol=0, atol=0)
    torch.testing.assert_close(out.std, prob.posterior.std.expand(3, 1, 4, 4), rtol=0, atol=0)
    # the exact samples it carries have the closed form's moments (Monte-Carlo error)
    assert float((out.samples.std(1) / out.std - 1).abs().max()) < 0.12
    why = ref.fits(prob.prior, prob.forward_model, GaussianNoise(level=0.05))
    assert "absolute std" in why
