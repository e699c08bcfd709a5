"""Priors: contract, geometry (area fractions, orientation), distributions, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from invdiff_elasticity import CircularInclusionPrior, LognormalFieldPrior, MultiInclusionPrior

import invdiff
from invdiff.errors import ConfigError, DataError
from invdiff.reference.prior import GaussianFieldPrior
from invdiff.testing import check_prior


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("name", ["circular-inclusion", "multi-inclusion", "lognormal-field"])
def test_contract(name):
    prior = invdiff.create("prior", name, n=12)
    x = check_prior(prior)
    assert prior.shape == (1, 12, 12) and x.dtype == torch.float32 and bool((x > 0).all())


def test_disc_area_and_centre():
    n, cx, cy, r, c = 32, 0.3, 0.7, 0.15, 4.0
    prior = CircularInclusionPrior(n=n, subsamples=16)
    x = prior.field_from_params(torch.tensor([cx, cy, r, c]), torch.float64)[0, 0]
    frac = (x - 1) / (c - 1)  # area fraction of each element inside the disc
    assert float(frac.min()) >= 0 and float(frac.max()) == 1.0
    assert float(frac.sum()) / n**2 == pytest.approx(math.pi * r**2, rel=2e-3)
    # centroid in unit-square coordinates: column -> x, row 0 = top -> y = 1 - (row + 1/2) / n
    centres = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    x_bar = float((frac * centres[None, :]).sum() / frac.sum())
    y_bar = float((frac * (1 - centres[:, None])).sum() / frac.sum())
    assert x_bar == pytest.approx(cx, abs=1e-3) and y_bar == pytest.approx(cy, abs=1e-3)
    assert float(x[int((1 - cy) * n), int(cx * n)]) == c  # top-left quadrant, as promised


def test_area_fraction_converges_with_subsamples():
    # contrast 2: the field sums to 64 + (disc area) * 64 on an 8 x 8 grid
    p = torch.tensor([0.43, 0.52, 0.17, 2.0])
    fields = [CircularInclusionPrior(n=8, subsamples=s).field_from_params(p, torch.float64)
              for s in (4, 16, 64)]
    areas = [(float(f.sum()) - 64) / 64 for f in fields]
    errors = [abs(a - math.pi * 0.17**2) for a in areas]
    assert errors[2] < errors[0] and errors[2] < 1e-3 * math.pi * 0.17**2


def test_circular_parameters_are_uniform_and_reproduce_the_field():
    prior = CircularInclusionPrior(n=8, centre_range=(0.3, 0.6), radius_range=(0.1, 0.2),
                                   contrast_range=(2.0, 5.0))
    x, params = prior.sample_with_params(4000, generator=gen())
    lo, hi = prior.bounds[:, 0], prior.bounds[:, 1]
    assert bool(((params >= lo) & (params <= hi)).all())
    se = (hi - lo) / math.sqrt(12 * 4000)  # standard error of the mean of a uniform
    assert bool((((params.mean(0) - (lo + hi) / 2).abs()) < 4 * se).all())
    torch.testing.assert_close(prior.field_from_params(params[:5]), x[:5])


def test_multi_inclusion_counts_and_contrasts():
    prior = MultiInclusionPrior(n=8, min_inclusions=1, max_inclusions=3, p_stiff=0.25)
    x, params = prior.sample_with_params(3000, generator=gen(1))
    present = params[..., 2] > 0
    counts = present.sum(1)
    freq = torch.bincount(counts, minlength=4)[1:].double() / 3000
    assert bool(((freq - 1 / 3).abs() < 0.04).all()), freq  # uniform on {1, 2, 3}
    c = params[..., 3][present]
    stiff, soft = (c >= 2) & (c <= 5), (c >= 0.2) & (c <= 0.5)
    assert bool((stiff | soft).all())
    assert float(stiff.double().mean()) == pytest.approx(0.25, abs=0.03)
    assert bool((params[..., 3][~present] == 1).all())  # padding is invisible
    lo, hi = float(x.min()), float(x.max())
    assert 0.2 <= lo and hi <= 5.0


def test_lognormal_covariance_matches_the_reference_grf():
    n, s, ell = 6, 0.8, 0.3
    ours = LognormalFieldPrior(n=n, log_std=s, length_scale=ell, nugget=1e-3)
    ref = GaussianFieldPrior(n=n, variance=s**2, length_scale=ell, nugget=1e-3)
    torch.testing.assert_close(ours.covariance_matrix(), ref.covariance_matrix(), rtol=0,
                               atol=1e-12)


def test_lognormal_moments():
    prior = LognormalFieldPrior(n=8, log_mean=0.3, log_std=0.5, length_scale=0.2)
    g = prior.sample_log(4000, generator=gen(2))
    assert float(g.mean()) == pytest.approx(0.3, abs=0.03)
    assert float(g.var()) == pytest.approx(0.25, rel=0.08)
    x = prior.sample(2, generator=gen(2))
    torch.testing.assert_close(x, g[:2].exp().float())  # same stream: x = exp(g)


def test_prior_errors():
    with pytest.raises(ConfigError, match="radius_range"):
        invdiff.create("prior", "circular-inclusion", radius_range=(0.3, 0.1))
    with pytest.raises(ConfigError, match="contrast"):
        invdiff.create("prior", "multi-inclusion", soft_contrast_range=(-1.0, 0.5))
    with pytest.raises(ConfigError, match="unknown parameter"):
        invdiff.create("prior", "lognormal-field", sigma=1.0)
    with pytest.raises(DataError, match="min_inclusions"):
        MultiInclusionPrior(min_inclusions=3, max_inclusions=2)
    with pytest.raises(DataError, match=r"\(B, 4\)"):
        CircularInclusionPrior(n=4).field_from_params(torch.ones(2, 3))
    with pytest.raises(DataError, match=r"\(B, K, 4\)"):
        MultiInclusionPrior(n=4).field_from_params(torch.ones(2, 4))


def test_prior_samples_land_on_the_requested_device():
    x = CircularInclusionPrior(n=4).sample(2, generator=gen(), device="cpu")
    assert x.device.type == "cpu"
    np.testing.assert_array_equal(x.shape, (2, 1, 4, 4))
