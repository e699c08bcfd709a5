"""Predictor-corrector on the exact-score reference problem: accuracy against the closed form."""

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

N_SAMPLES = 2000  # per measurement; M = 2 measurements -> 4000 chains


@pytest.mark.parametrize(
    ("problem", "levels", "params"),
    [
        ("blur-mask-8", 100, {}),  # defaults: snr 0.16, 1 corrector step, final denoising
        ("subsample-10", 100, {}),
        # predictor only, run down to sigma = 0 with its noise (no denoising)
        ("blur-mask-8", 200, {"corrector_steps": 0, "final_denoise": False}),
    ],
)
def test_predictor_corrector_matches_exact_posterior(problem, levels, params, torch_device):
    prob, y = reference_case(**REFERENCE_PROBLEMS[problem])
    y = y.to(torch_device)  # the chains live on y's device (CUDA on a GPU machine)
    post = prob.posterior
    sampler = invdiff.create("sampler", "predictor-corrector", progress=False, **params)
    res = sampler.sample(post.score_fn(), y, geometric(10.0, 0.01, levels), N_SAMPLES,
                         generator=torch.Generator(torch_device).manual_seed(1))
    assert res.samples.device.type == torch_device.type
    assert res.nfe == 200 <= 500  # L (K + 1) either way
    # With denoising the last predictor is Tweedie's step from p_{sigma_L}, whose law is
    # N(m, S (S + sigma_L^2)^-1 S); without it the predictor runs to sigma = 0: N(m, S).
    denoised = params.get("final_denoise", True)
    target = target_cov(post.cov, 0.01 if denoised else 0.0, denoised)
    acc = gaussian_accuracy(res.samples, post.mean(y), post.cov, target)
    # Monte Carlo error: mean error ~ 1/sqrt(2000) = 0.022 posterior stds (RMS); per-pixel std
    # ratio ~ 1/sqrt(2 * 4000) = 1.1% (pooled over 2 measurements), max over <= 100 pixels
    # ~ 3.5%. The measured bias is +1.5 to +2.5% (Euler-Maruyama excess ~ log(gamma) / 2).
    assert acc.mean_error <= 0.1, acc.mean_error
    assert acc.max_std_error <= 0.07, acc.std_ratio
    assert abs(acc.mean_std_ratio - 1) <= 0.04, acc.mean_std_ratio


def test_predictor_corrector_contract():
    check_sampler(invdiff.create("sampler", "predictor-corrector", progress=False))
    check_sampler(invdiff.create("sampler", "predictor-corrector", progress=False,
                                 corrector_steps=0, final_denoise=False))


def test_predictor_variance_recursion():
    """Predictor only on N(0, v) in every direction: the output variance follows the closed
    form V' = (1 - d/(v + sigma_i^2))^2 V + d, d = sigma_i^2 - sigma_{i+1}^2, to sigma = 0."""
    v = 0.5
    sigmas = [3.0, 1.0, 0.3]

    s = invdiff.create("sampler", "predictor-corrector", corrector_steps=0,
                       final_denoise=False, progress=False)
    res = s.sample(IsotropicScore(v), torch.zeros(1, 1, dtype=torch.float64),
                   torch.tensor(sigmas, dtype=torch.float64), 20000,
                   generator=torch.Generator().manual_seed(0))
    var_pred = sigmas[0] ** 2
    for s_i, s_next in zip(sigmas, sigmas[1:] + [0.0], strict=True):
        d = s_i**2 - s_next**2
        var_pred = (1 - d / (v + s_i**2)) ** 2 * var_pred + d
    # 320000 draws: relative MC error of the variance ~ 0.25%
    assert float(res.samples.var()) == pytest.approx(var_pred, rel=0.015)
    assert res.nfe == 3


def test_snr_step_size_rule():
    from invdiff.sampling import snr_step_size

    s = torch.tensor([[3.0, 4.0], [0.0, 0.0]])  # |s| = 5, then 0 (at the mode)
    z = torch.tensor([[1.0, 0.0], [1.0, 1.0]])  # |z| = 1
    a = snr_step_size(s, z, snr=0.5)
    assert torch.allclose(a, torch.tensor([2 * (0.5 * 1 / 5) ** 2, 0.0]))
