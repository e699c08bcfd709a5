"""Annealed Langevin on the exact-score reference problem: accuracy against the closed form."""

from __future__ import annotations

import pytest
import torch

import invdiff
from invdiff.reference.diagnostics import (
    REFERENCE_PROBLEMS,
    IsotropicScore,
    gaussian_accuracy,
    reference_case,
    target_cov,
)
from invdiff.sampling.sigmas import geometric
from invdiff.testing import check_sampler

N_SAMPLES = 1000  # per measurement; M = 2 measurements -> 2000 chains
L = 60  # levels: 60 x 5 + 1 = 301 score evaluations per chain


@pytest.mark.parametrize(("problem", "final_denoise"),
                         [("blur-mask-8", True), ("subsample-10", True), ("blur-mask-8", False)])
def test_annealed_langevin_matches_exact_posterior(problem, final_denoise, torch_device):
    prob, y = reference_case(**REFERENCE_PROBLEMS[problem])
    y = y.to(torch_device)  # the chains live on y's device (CUDA on a GPU machine)
    post = prob.posterior
    sigmas = geometric(10.0, 0.01, L)
    sampler = invdiff.create("sampler", "annealed-langevin", progress=False,
                             final_denoise=final_denoise)
    res = sampler.sample(post.score_fn(), y, sigmas, N_SAMPLES,
                         generator=torch.Generator(torch_device).manual_seed(1))
    assert res.samples.device.type == torch_device.type
    assert res.nfe == L * 5 + int(final_denoise) <= 500
    # The chains target p_{sigma_L} = N(m, S + sigma_L^2 I); the final denoising step maps it
    # to N(m, S (S + sigma_L^2 I)^-1 S). Compare with what the sampler aims at.
    acc = gaussian_accuracy(res.samples, post.mean(y), post.cov,
                            target_cov(post.cov, 0.01, denoised=final_denoise))
    # Monte Carlo error: mean error ~ 1/sqrt(n) = 0.032 (RMS, in posterior stds); per-pixel
    # std ratio ~ 1/sqrt(2 * 2000) = 1.6% (pooled over 2 measurements), so its max over
    # <= 100 pixels carries ~ 5% of noise; the measured bias is ~ +9% (std too large, the
    # known undershoot of annealed Langevin's step rule), so 20% tests the sampler, not noise.
    assert acc.mean_error <= 0.1, acc.mean_error
    assert acc.max_std_error <= 0.20, acc.std_ratio
    # and it is not trivially right: the std is not simply the prior's or zero
    assert 0.5 < acc.mean_std_ratio < 1.5


def test_annealed_langevin_contract():
    check_sampler(invdiff.create("sampler", "annealed-langevin", progress=False))


def test_eps_default_follows_ncsnv2_rule():
    from invdiff.sampling.sigmas import langevin_step_size

    prob, y = reference_case(n=4, mask_fraction=1.0)
    sigmas = geometric(5.0, 0.05, 10)
    s = invdiff.create("sampler", "annealed-langevin", steps_per_level=3, progress=False)
    res = s.sample(prob.posterior.score_fn(), y, sigmas, 2)
    assert res.info["eps"] == pytest.approx(langevin_step_size(sigmas, 3))
    assert res.nfe == 10 * 3 + 1


def test_langevin_one_level_variance_recursion():
    """One level, fixed eps, on N(0, v) in every direction: after T steps from N(0, sigma_1^2)
    the variance is the closed form of V' = (1 - a/v)^2 V + 2a."""
    v, s1, eps, steps = 0.7, 2.0, 0.3, 4

    s = invdiff.create("sampler", "annealed-langevin", steps_per_level=steps, eps=eps,
                       final_denoise=False, progress=False)
    res = s.sample(IsotropicScore(v), torch.zeros(1, 1, dtype=torch.float64),
                   torch.tensor([s1], dtype=torch.float64), 20000,
                   generator=torch.Generator().manual_seed(0))
    var_pred = s1**2
    c = 1 - eps / (v + s1**2)
    for _ in range(steps):
        var_pred = c**2 * var_pred + 2 * eps
    var = res.samples.var()  # 320000 draws (16 independent directions): rel. error ~ 0.25%
    assert float(var) == pytest.approx(var_pred, rel=0.015)
