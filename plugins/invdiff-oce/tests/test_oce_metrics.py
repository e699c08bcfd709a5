"""The OCE metrics (IoU of the thresholded inclusion, spheroid and gel modulus errors) against
independent truths: closed-form disc overlaps, exact scalings, the prior's exact outline and
scipy's hole filling; their registration and the contract kit."""

import math

import pytest
import torch
from invdiff_oce.metrics import (
    THRESHOLD,
    fill_holes,
    gel_rel_err,
    inclusion_iou,
    inclusion_map,
    spheroid_mask,
    spheroid_rel_err,
)
from invdiff_oce.spheroid import NAMES

import invdiff
from invdiff.errors import ConfigError
from invdiff.evaluation.problem_metrics import problem_metrics
from invdiff.testing import check_metric

METRICS = ("oce-inclusion-iou", "oce-spheroid-modulus", "oce-gel-modulus")


def discs(n: int, centres: list[tuple[float, float]], r: float, gel: float = 2.0,
          stiff: float = 6.0) -> torch.Tensor:
    """(1, 1, n, n) field: ``gel`` with discs of radius ``r`` at ``centres`` set to ``stiff``
    (membership of each pixel centre), unit-square coordinates, row 0 at the top."""
    t = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    px, py = t.view(1, n), (1 - t).view(n, 1)
    inside = torch.zeros(n, n, dtype=torch.bool)
    for cx, cy in centres:
        inside |= (px - cx) ** 2 + (py - cy) ** 2 < r**2
    return torch.where(inside, stiff, gel).view(1, 1, n, n)


def lens_iou(r: float, d: float) -> float:
    """IoU of two discs of radius r whose centres are d apart (d < 2r)."""
    lens = 2 * r**2 * math.acos(d / (2 * r)) - d / 2 * math.sqrt(4 * r**2 - d**2)
    return lens / (2 * math.pi * r**2 - lens)


@pytest.fixture(scope="module")
def prior():
    return invdiff.create("prior", "tumour-spheroid", n=16)


@pytest.fixture(scope="module")
def draws(prior):
    x, params = prior.sample_with_params(6, generator=torch.Generator().manual_seed(0))
    return x, params


# -- the functions against independent truths -----------------------------------------------
def test_iou_of_a_field_with_itself_is_one(draws):
    x, _ = draws
    torch.testing.assert_close(inclusion_iou(x, x, rows=2), torch.ones(len(x),
                                                                       dtype=torch.float64))
    # a scaling changes no ratio to the median: the same inclusion
    torch.testing.assert_close(inclusion_iou(1.7 * x, x, rows=2),
                               torch.ones(len(x), dtype=torch.float64))


def test_iou_of_disjoint_discs_is_zero():
    a = discs(64, [(0.3, 0.5)], 0.12)
    b = discs(64, [(0.7, 0.5)], 0.12)
    assert inclusion_iou(a, b, rows=0).item() == 0.0


@pytest.mark.parametrize("d", [0.05, 0.15, 0.25])
def test_iou_of_overlapping_discs_is_the_lens_ratio(d):
    n, r = 256, 0.15
    a = discs(n, [(0.35, 0.5)], r)
    b = discs(n, [(0.35 + d, 0.5)], r)
    assert inclusion_iou(a, b, rows=0).item() == pytest.approx(lens_iou(r, d), abs=0.01)


def test_empty_maps_agree_and_soft_inclusions_count():
    flat = torch.full((1, 1, 16, 16), 2.0)
    assert inclusion_iou(flat, flat, rows=0).item() == 1.0
    soft = discs(32, [(0.5, 0.5)], 0.2, gel=2.0, stiff=1.0)  # modulus / median = 0.5
    assert inclusion_map(soft, rows=0).sum() == (soft < 2.0).sum()
    assert inclusion_iou(soft, discs(32, [(0.5, 0.5)], 0.2), rows=0).item() == 1.0


def test_threshold_is_a_factor_either_way():
    x = torch.full((1, 1, 8, 8), 2.0)
    x[0, 0, 2, 2], x[0, 0, 3, 3] = 2.0 * 1.24, 2.0 * 1.26
    x[0, 0, 4, 4], x[0, 0, 5, 5] = 2.0 / 1.24, 2.0 / 1.26
    m = inclusion_map(x, rows=0)[0, 0]
    assert m.sum() == 2 and m[3, 3] and m[5, 5]
    assert THRESHOLD == 1.25


def test_moduli_errors_of_the_truth_are_zero_and_of_a_scaling_exact(draws):
    x, params = draws
    zeros = torch.zeros(len(x), dtype=torch.float64)
    torch.testing.assert_close(spheroid_rel_err(x, x, rows=2), zeros)
    torch.testing.assert_close(gel_rel_err(x, x, rows=2), zeros)
    scaled = 1.1 * x.double()
    torch.testing.assert_close(spheroid_rel_err(scaled, x, rows=2), zeros + 0.1)
    torch.testing.assert_close(gel_rel_err(scaled, x, rows=2), zeros + 0.1)


def test_spheroid_error_is_the_error_of_the_mean_over_the_outline(prior, draws):
    """With the prior's exact outline passed in: the relative error of the region's mean,
    computed here by hand on a field whose spheroid (only) is raised by 1 kPa."""
    x, params = draws
    exact = prior.inclusion_mask(params) >= 0.5
    est = x.double() + exact.double()
    mean_truth = (x.double() * exact)[:, :, 2:].flatten(1).sum(1) / exact.flatten(1).sum(1)
    torch.testing.assert_close(spheroid_rel_err(est, x, rows=2, mask=exact), 1.0 / mean_truth)


def test_spheroid_outline_from_the_truth_matches_the_exact_outline():
    """The outline derived from the true field alone against the prior's exact one
    (elements at least half inside the spheroid), over 200 draws on a 24 x 24 grid."""
    prior = invdiff.create("prior", "tumour-spheroid", n=24)
    x, params = prior.sample_with_params(200, generator=torch.Generator().manual_seed(1))
    exact = (prior.inclusion_mask(params) >= 0.5)[:, :, 3:]
    derived = spheroid_mask(x, rows=3)
    iou = (exact & derived).flatten(1).sum(1) / (exact | derived).flatten(1).sum(1)
    assert iou.mean() > 0.97 and iou.min() > 0.7
    body = x.double()[:, :, 3:]
    mean = lambda m: (body * m).flatten(1).sum(1) / m.flatten(1).sum(1)  # noqa: E731
    assert ((mean(derived) - mean(exact)) / mean(exact)).abs().mean() < 0.005


def test_core_near_the_gel_modulus_belongs_to_the_spheroid():
    """A core of 0.95 x the gel (invisible to the threshold) enclosed by a stiff rim."""
    prior = invdiff.create("prior", "tumour-spheroid", n=32)
    base = {"cx": 0.5, "cy": 0.45, "a": 0.25, "aspect": 0.9, "theta": 0.3, "rim_ratio": 3.0,
            "core_ratio": 0.95, "core_fraction": 0.5, "gel": 2.0}
    params = torch.tensor([[base[k] for k in NAMES]], dtype=torch.float64)
    x = prior.field_from_params(params)
    exact = (prior.inclusion_mask(params) >= 0.5)[:, :, 4:]
    derived = spheroid_mask(x, rows=4)
    assert (exact ^ derived).sum() <= 0.03 * exact.sum()
    assert (derived & ~inclusion_map(x, rows=4)).sum() > 10  # the core is in


def test_fill_holes_matches_scipy():
    ndimage = pytest.importorskip("scipy.ndimage")
    g = torch.Generator().manual_seed(3)
    masks = torch.rand(20, 1, 12, 14, generator=g) < 0.55
    ours = fill_holes(masks)
    for m, o in zip(masks, ours, strict=True):
        want = torch.from_numpy(ndimage.binary_fill_holes(m[0].numpy()))
        assert torch.equal(o[0], want)


# -- registered metrics ----------------------------------------------------------------------
def test_metrics_are_registered_and_validate_params():
    assert set(METRICS) <= set(invdiff.available("metric"))
    assert invdiff.create("metric", "oce-inclusion-iou").threshold == 1.25
    with pytest.raises(ConfigError, match="threshold"):
        invdiff.create("metric", "oce-inclusion-iou", threshold=1.0)


def test_metrics_apply_only_to_the_spheroid_prior(prior):
    other = invdiff.create("prior", "gaussian-field", n=4)
    for name in METRICS:
        metric = invdiff.create("metric", name)
        assert metric.applies(prior, None, None) is True
        assert metric.applies(other, None, None) is False


@pytest.mark.parametrize("name", METRICS)
def test_contract_kit(prior, draws, name):
    x, _ = draws
    g = torch.Generator().manual_seed(2)
    samples = x[:, None] * (1 + 0.2 * torch.randn(len(x), 5, *x.shape[1:], generator=g))
    check_metric(invdiff.create("metric", name), prior, None, None, samples, x)


def test_registered_metrics_are_the_functions_on_the_posterior_mean(prior, draws):
    x, _ = draws
    g = torch.Generator().manual_seed(4)
    samples = x[:, None] * (1 + 0.3 * torch.randn(len(x), 8, *x.shape[1:], generator=g))
    values = problem_metrics((prior, None, None), samples, x)
    mean = samples.double().mean(1)
    assert values["iou"] == pytest.approx(float(inclusion_iou(mean, x, 2).mean()))
    assert values["spheroid_rel_err"] == pytest.approx(float(spheroid_rel_err(mean, x, 2).mean()))
    assert values["gel_rel_err"] == pytest.approx(float(gel_rel_err(mean, x, 2).mean()))
    assert 0 < values["iou"] < 1 and values["spheroid_rel_err"] > 0
