"""Noise ladders and the NCSNv2 heuristics against the paper's published settings."""

from __future__ import annotations

import math

import pytest
import torch

from invdiff.errors import ConfigError
from invdiff.sampling import sigmas as S


def test_geometric_ladder():
    s = S.geometric(10.0, 0.01, 4)
    assert torch.allclose(s, torch.tensor([10.0, 1.0, 0.1, 0.01]), rtol=1e-6)


def test_step_size_reproduces_ncsnv2_cifar10():
    # NCSNv2 (Song & Ermon 2020), CIFAR-10 config: sigma_1=50, sigma_L=0.01, L=232, T=5
    # -> step_lr eps = 6.2e-6.
    eps = S.langevin_step_size(S.geometric(50.0, 0.01, 232), 5)
    assert eps == pytest.approx(6.2e-6, rel=0.02)


def test_ratio_gives_half_overlap_and_grows_for_small_dims():
    for dim in (16, 256, 3072):
        gamma = S.ratio_for_dim(dim)
        assert S.overlap(gamma, dim) == pytest.approx(0.5, abs=1e-6)
    assert S.ratio_for_dim(16) > S.ratio_for_dim(256) > S.ratio_for_dim(3072) > 1.0


def test_suggest_on_known_points():
    x = torch.zeros(3, 1, 2, 2)
    x[1, 0, 0, 0] = 3.0
    x[2, 0, 1, 1] = -4.0  # distance between x1 and x2 is 5
    sug = S.suggest(x, sigma_L=0.01, steps_per_level=5)
    assert sug.sigma_1 == pytest.approx(5.0)
    gamma = S.ratio_for_dim(4)
    assert sug.n_levels == math.ceil(math.log(5.0 / 0.01) / math.log(gamma)) + 1
    assert "technique 1" in str(sug) and len(sug.sigmas()) == sug.n_levels
    assert sug.eps == pytest.approx(S.langevin_step_size(sug.sigmas(), 5))


def test_ladder_errors():
    with pytest.raises(ConfigError, match="strictly decreasing"):
        S.check_ladder(torch.tensor([1.0, 2.0]))
    with pytest.raises(ConfigError, match="finite and positive"):
        S.check_ladder(torch.tensor([1.0, float("nan")]))
    with pytest.raises(ConfigError, match="sigma_1 > sigma_L"):
        S.geometric(0.1, 1.0, 5)
    with pytest.raises(ConfigError, match="at least 2 training"):
        S.suggest(torch.zeros(1, 1, 2, 2))
