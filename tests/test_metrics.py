"""The posterior metrics on exact posterior samples, against what sampling theory predicts."""

from __future__ import annotations

import math
import statistics

import pytest
import torch

from invdiff.errors import DataError
from invdiff.evaluation.metrics import exact_sampler_scores, posterior_metrics
from invdiff.reference import make_problem


@pytest.mark.parametrize("n", [16, 64, 256])
def test_exact_samples_score_the_predicted_std_ratio_and_std_corr(n, gen):
    """Exact samples of a Gaussian posterior, scored like a learned posterior, land on the
    closed-form expectations: std_ratio on c4(n) (the sample std's bias), std_corr on the
    dilution by per-pixel sampling noise of relative variance 1 / (2 (n - 1))."""
    prob = make_problem(n=8, mask_fraction=0.5, noise_level=0.05)
    post = prob.posterior
    x = prob.prior.sample(4, generator=gen(0))
    y = prob.noise_model(prob.forward_model(x), generator=gen(1)).double()
    mean, std = post.mean(y), post.std.expand(4, *post.x_shape)
    runs = [posterior_metrics(post.sample(y, n, gen(10 + r)), None, mean, std)
            for r in range(24)]
    expected = exact_sampler_scores(post.std, n)
    for key, tol in (("std_ratio", 0.005), ("std_corr", 0.01)):
        got = [r[key] for r in runs]
        sem = statistics.stdev(got) / math.sqrt(len(got))
        assert abs(statistics.mean(got) - expected[key]) < 4 * sem + tol, (key, got, expected)
    # the closed form itself: c4(2) = sqrt(2 / pi); a flat std field has no correlation to find
    assert exact_sampler_scores(torch.ones(3), 2)["std_ratio"] == pytest.approx(
        math.sqrt(2 / math.pi))
    assert math.isnan(exact_sampler_scores(torch.ones(3), 64)["std_corr"])


def test_exact_sampler_scores_needs_two_samples():
    with pytest.raises(DataError, match="at least 2 samples"):
        exact_sampler_scores(torch.ones(3), 1)
