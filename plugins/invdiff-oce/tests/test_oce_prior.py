"""The tumour-spheroid prior: geometry against closed forms, value ranges, layer, parameters,
contract kit and errors."""

import math

import pytest
import torch
from invdiff_oce.spheroid import NAMES, TumourSpheroidPrior

import invdiff
from invdiff.errors import ConfigError, DataError
from invdiff.testing import check_prior

N = 24


def _params(**kw) -> torch.Tensor:
    base = {"cx": 0.5, "cy": 0.45, "a": 0.25, "aspect": 0.6, "theta": 0.4, "rim_ratio": 3.0,
            "core_ratio": 0.5, "core_fraction": 0.5, "gel": 2.0}
    base.update(kw)
    return torch.tensor([[base[k] for k in NAMES]], dtype=torch.float64)


def test_area_fractions_match_the_ellipse_areas():
    """Spheroid area pi a b, core area pi f^2 a b, layer area width x thickness, from the
    painted field (area averages are exact up to the sub-sampling of boundary elements)."""
    prior = TumourSpheroidPrior(n=N, layer_modulus=1.0, layer_thickness=0.125, subsamples=16)
    p = _params()
    a, b, f, gel = 0.25, 0.25 * 0.6, 0.5, 2.0
    mask = prior.inclusion_mask(p)
    assert mask.sum().item() / N**2 == pytest.approx(math.pi * a * b, rel=5e-3)
    x = prior.field_from_params(p, dtype=torch.float64)[0, 0]
    # x = gel + (rim - gel) [spheroid] + (core - rim) [core] + (layer - gel) [layer], averaged
    total = (x.sum() / N**2).item()
    expected = (gel + (3.0 * gel - gel) * math.pi * a * b
                + (0.5 * gel - 3.0 * gel) * math.pi * f**2 * a * b + (1.0 - gel) * 0.125)
    assert total == pytest.approx(expected, rel=5e-3)
    torch.testing.assert_close(x[:3], torch.full((3, N), 1.0, dtype=torch.float64))


def test_orientation_and_position_follow_unit_square_coordinates():
    """theta = 0: major axis along x; theta = pi/2: along y (array rows). cx, cy with y up."""
    prior = TumourSpheroidPrior(n=N)
    flat = prior.inclusion_mask(_params(theta=0.0, aspect=0.4, cy=0.3))[0, 0]
    tall = prior.inclusion_mask(_params(theta=math.pi / 2, aspect=0.4, cy=0.3))[0, 0]
    assert (flat.sum(0) > 0).sum() > (flat.sum(1) > 0).sum()  # wider than tall
    assert (tall.sum(1) > 0).sum() > (tall.sum(0) > 0).sum()
    rows = torch.arange(N, dtype=torch.float64) + 0.5
    centre_row = (flat.sum(1) * rows).sum() / flat.sum()
    assert 1 - centre_row.item() / N == pytest.approx(0.3, abs=1e-3)  # y = 1 - row / N


def test_samples_respect_the_ranges():
    prior = TumourSpheroidPrior(n=16)
    x, p = prior.sample_with_params(200, generator=torch.Generator().manual_seed(0))
    b = prior.bounds
    assert bool(((p >= b[:, 0]) & (p <= b[:, 1])).all())
    gel = p[:, 8].view(-1, 1, 1, 1)
    lo = torch.minimum(gel * p[:, 6].view(-1, 1, 1, 1), torch.ones_like(gel))
    hi = torch.maximum(gel * p[:, 5].view(-1, 1, 1, 1), gel)
    body = x[:, :, 2:].double()
    assert bool((body >= lo - 1e-5).all() and (body <= hi + 1e-5).all())
    assert bool((x[:, :, :2] == 1.0).all())  # the compliant layer, 2 full rows
    assert bool((x[:, 0, -1, 0].double() - p[:, 8]).abs().max() < 1e-6)  # a gel corner
    torch.testing.assert_close(prior.field_from_params(p), x)


def test_fixed_gel_modulus_and_contract_kit():
    prior = invdiff.create("prior", "tumour-spheroid", n=12, gel_modulus_range=(2.0, 2.0),
                           layer_thickness=0.0, centre_y_range=(0.4, 0.6))
    x = check_prior(prior, n=4)
    assert bool((x[:, 0, 0, 0] == 2.0).all())
    assert x.dtype == torch.float32


def test_bad_parameters_raise_clear_errors():
    with pytest.raises(ConfigError, match="into the compliant layer"):
        invdiff.create("prior", "tumour-spheroid", centre_y_range=(0.3, 0.8))
    with pytest.raises(ConfigError, match="low <= high"):
        invdiff.create("prior", "tumour-spheroid", rim_ratio_range=(4.0, 1.5))
    with pytest.raises(ConfigError, match="positive"):
        invdiff.create("prior", "tumour-spheroid", gel_modulus_range=(0.0, 1.0))
    with pytest.raises(ConfigError, match="within \\[0, 1\\]"):
        invdiff.create("prior", "tumour-spheroid", aspect_range=(0.5, 1.5))
    prior = TumourSpheroidPrior(n=8)
    with pytest.raises(DataError, match="expected \\(B, 9\\)"):
        prior.field_from_params(torch.zeros(2, 4))
    with pytest.raises(DataError, match="must be positive"):
        prior.field_from_params(_params(a=0.0))
