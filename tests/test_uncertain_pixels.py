"""Diagnostics that a certain background cannot fool: coverage on the uncertain pixels, and
the proper scoring rules (CRPS, energy score) against their closed forms."""

from __future__ import annotations

import math

import torch

from invdiff.evaluation.metrics import crps, energy_score, posterior_metrics
from invdiff.evaluation.verdicts import calibration_verdict


def test_crps_matches_the_gaussian_closed_form():
    """CRPS(N(mu, s^2), x) = s [z (2 Phi(z) - 1) + 2 phi(z) - 1/sqrt(pi)], z = (x - mu)/s."""
    g = torch.Generator().manual_seed(0)
    mu, s = 0.3, 2.0
    x = torch.tensor([[-1.0, 0.3, 4.0]]).reshape(1, 1, 1, 3)
    samples = mu + s * torch.randn(1, 40000, 1, 1, 3, generator=g, dtype=torch.float64)
    z = (x.double() - mu) / s
    phi = torch.exp(-z**2 / 2) / math.sqrt(2 * math.pi)
    cdf = 0.5 * (1 + torch.erf(z / math.sqrt(2)))
    exact = s * (z * (2 * cdf - 1) + 2 * phi - 1 / math.sqrt(math.pi))
    torch.testing.assert_close(crps(samples, x), exact, rtol=0.02, atol=0.01)


def test_energy_score_is_the_crps_in_one_dimension_and_brute_force_otherwise():
    g = torch.Generator().manual_seed(1)
    s = torch.randn(2, 30, 1, 2, 2, generator=g, dtype=torch.float64)
    x = torch.randn(2, 1, 2, 2, generator=g, dtype=torch.float64)
    flat = s.flatten(2)
    first = (flat - x.flatten(1)[:, None]).norm(dim=2).mean(1)
    pair = torch.stack([sum((a - b).norm() for a in f for b in f) / (30 * 29) for f in flat])
    torch.testing.assert_close(energy_score(s, x), (first - pair / 2) / 2)
    one = s[:, :, :, :1, :1]
    torch.testing.assert_close(energy_score(one, x[:, :, :1, :1]), crps(one, x[:, :, :1, :1])
                               .flatten(1).mean(1))


def test_a_certain_background_cannot_hide_a_too_narrow_posterior():
    """A 16 x 16 field whose background is known exactly and whose 4 x 4 inclusion has a
    posterior half as wide as it should be: pooled 90% coverage looks too wide, the uncertain
    pixels show it is too narrow, and the verdict says so."""
    g = torch.Generator().manual_seed(2)
    m, n = 50, 200
    truth = torch.zeros(m, 1, 16, 16)
    samples = torch.zeros(m, n, 1, 16, 16) + 1e-3 * torch.randn(m, n, 1, 16, 16, generator=g)
    truth[:, :, 6:10, 6:10] = torch.randn(m, 1, 4, 4, generator=g)  # truth ~ N(0, 1) there
    samples[:, :, :, 6:10, 6:10] = 0.5 * torch.randn(m, n, 1, 4, 4, generator=g)  # too narrow
    met = posterior_metrics(samples, truth)
    assert met["coverage_90"] > 0.9  # the background covers "at any width"
    assert abs(met["uncertain_fraction"] - 16 / 256) < 1e-9
    assert 0.5 < met["coverage_90_uncertain"] < 0.7  # N(0,1) inside +-1.645 * 0.5: 0.59
    line = calibration_verdict(met)
    assert "on the uncertain pixels" in line and "too narrow" in line
    assert calibration_verdict({"coverage_50": 0.9, "coverage_90": 0.99}) is not None
