"""What the numbers and figures mean: labels from the components, self-describing metrics,
the calibration verdict and the loss axis."""

from __future__ import annotations

import pytest
import torch

import invdiff
from invdiff.evaluation.figures import loss_figure, loss_limits, posterior_figure
from invdiff.evaluation.verdicts import (
    FieldLabel,
    calibration_verdict,
    describe_metrics,
    field_labels,
)


def test_labels_come_from_the_components_with_neutral_fallbacks(fresh_registry):
    assert field_labels() == {"x": FieldLabel("x", ""), "y": FieldLabel("measurement y", "")}
    prior = invdiff.create("prior", "gaussian-field", n=4)
    blur = invdiff.create("forward_model", "blur", n=4)
    labels = field_labels(prior, blur)
    assert labels["x"].units == "no physical unit"
    assert str(labels["y"]) == "blurred x [units of x]"  # every pixel observed


def test_elasticity_fields_are_named_physically(fresh_registry):
    pytest.importorskip("invdiff_elasticity")
    labels = field_labels(invdiff.create("prior", "circular-inclusion", n=4),
                          invdiff.create("forward_model", "elasticity-fem", grid=4))
    assert labels["x"] == FieldLabel("shear modulus mu", "relative to the background")
    assert labels["y"].label.startswith("axial displacement u_y")
    assert labels["y"].units == "fraction of the side length"


@pytest.mark.parametrize("c50, c90, verdict", [
    (0.50, 0.90, None),                    # calibrated
    (0.40, 0.97, None),                    # the edges of the accepted ranges
    (0.86, 0.997, "too wide"),             # the over-wide posterior of a first demo run
    (0.20, 0.60, "too narrow"),
    (0.50, 0.99, "too wide"),              # one interval off is enough
])
def test_calibration_verdict(c50, c90, verdict):
    line = calibration_verdict({"coverage_50": c50, "coverage_90": c90})
    if verdict is None:
        assert line is None
    else:
        assert line.startswith("calibration is off") and verdict in line
        assert "\n" not in line


def test_verdict_quotes_the_coverage():
    line = calibration_verdict({"coverage_50": 0.86, "coverage_90": 0.997})
    assert "central 50% interval holds 86%" in line and "central 90% interval holds 100%" in line


def test_describe_metrics_covers_the_keys_present_only():
    d = describe_metrics({"rmse_truth": 0.1, "coverage_50": 0.5, "nfe": 3, "reference": None},
                         {"x": FieldLabel("mu", "kPa"), "y": FieldLabel("u", "mm")})
    assert set(d["descriptions"]) == {"rmse_truth", "coverage_50", "nfe"}
    assert d["units"] == {"rmse_truth": "kPa", "coverage_50": "fraction of pixels",
                          "nfe": "evaluations"}
    assert d["fields"] == {"x": "mu [kPa]", "y": "u [mm]"}
    assert d["reference_description"].startswith("none")


def test_loss_axis_is_set_by_the_trend_not_the_first_point():
    lo, hi = loss_limits([500.0, 2.0, 1.0, 0.5])
    assert hi == pytest.approx(3.0) and lo == pytest.approx(0.5 / 1.3)
    assert loss_limits([1.0]) == (pytest.approx(1 / 1.3), pytest.approx(1.5))
    assert loss_limits([]) == (1e-3, 1.0)


def test_figures_are_written(tmp_path):
    history = [{"step": s, "loss": 10.0 / s, "val_loss_ema": 12.0 / s} for s in (5, 10, 15)]
    assert loss_figure(tmp_path / "loss.png", history, title="t").stat().st_size > 1000
    g = torch.Generator().manual_seed(0)
    samples = torch.randn(4, 1, 6, 6, generator=g)
    path = posterior_figure(tmp_path / "p.png", samples[0], samples[1], samples,
                            labels={"x": FieldLabel("mu", "kPa"), "y": FieldLabel("u", "mm")})
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_oce_fields_are_named_physically(fresh_registry):
    pytest.importorskip("invdiff_oce")
    labels = field_labels(invdiff.create("prior", "tumour-spheroid"),
                          invdiff.create("forward_model", "oce-phase"))
    assert labels["x"] == FieldLabel("shear modulus", "kPa")
    assert str(labels["y"]) == "OCT phase difference, wrapped to (-pi, pi] [rad]"
