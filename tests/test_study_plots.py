"""The study's figures (invdiff.study.plots) are drawn for a small synthetic StudyResult, read
back from the files a study writes, and keep their legends off the data."""

from __future__ import annotations

import json
import math

import pytest

from invdiff.study import plots
from invdiff.study.report import write_csv
from invdiff.study.runner import StudyResult

NETS = ("unet", "refinenet")
SAMPLERS = ("predictor-corrector", "dpm-2m")


def _row(problem, net, sampler, train, test, reference, **extra):
    base = {"problem": problem, "net": net, "objective": "dsm", "sampler": sampler,
            "noise_param": "level", "noise_train": train, "noise_test": test,
            "missing": "none", "weights": "ema", "n_test": 4, "n_samples": 16,
            "nfe": 120 if sampler == "predictor-corrector" else 25,
            "seconds": 5.0 if sampler == "predictor-corrector" else 1.0,
            "train_seconds": 400.0, "train_steps": 3000, "rmse_truth": 0.2, "bias": 0.0,
            "mean_std": 0.1, "coverage_50": 0.5, "coverage_90": 0.9, "reference": reference,
            "n_ref": 2, "rmse_truth_refset": 0.2, "ref_rmse_truth": 0.15, "rmse_ref": 0.1,
            "std_ratio": 1.2 if net == "unet" else 9.0, "std_corr": 0.9, "ref_seconds": 20.0,
            "ref_sampled": reference.endswith("mcmc"), "sbc_chi2_p": 0.5, "sbc_ks": 0.05,
            "tarp_dev": 0.1}
    return {**base, **extra}


def _calibration(scale: float) -> dict:
    levels = [0.1 * k for k in range(1, 10)]
    return {"levels": levels, "coverage": [min(1.0, a * scale) for a in levels],
            "rank_counts": [4, 4, 4, 4], "rank_expected": [4.0, 4.0, 4.0, 4.0],
            "sbc_chi2": 0.0, "sbc_chi2_p": 1.0, "sbc_ks": 0.0, "n_samples": 16}


@pytest.fixture
def result() -> StudyResult:
    res = StudyResult()
    cells = [("reference", "linear-gaussian", 0.02, 0.02)]
    cells += [("elasticity", "inclusion-mcmc", lv, lv) for lv in (0.05, 0.1)]
    cells += [("elasticity", "inclusion-mcmc", 0.05, 0.1)]  # misspecified: no std ratio plot
    for problem, ref, train, test in cells:
        for net in NETS:
            for sampler in SAMPLERS:
                res.rows.append(_row(problem, net, sampler, train, test, ref))
                key = f"{problem}/{net}/{sampler}/{train:g}/{test:g}"
                res.calibration[key] = _calibration(1.1 if net == "unet" else 1.4)
    # a cell without a reference std, a peer row and a cell with gaps (not drawn)
    res.rows.append(_row("reference", "sbi-npse", "sbi-euler", 0.02, 0.02, "exact",
                         std_ratio=None, std_corr=float("nan")))
    res.calibration["reference/sbi-npse/sbi-euler/0.02/0.02"] = _calibration(1.6)
    res.rows.append(_row("reference", "unet", "dpm-2m", 0.02, 0.02, "linear-gaussian",
                         missing="entries-0.2", std_ratio=50.0))
    res.calibration["reference/unet/dpm-2m/0.02/0.02 entries-0.2"] = _calibration(2.0)
    return res


EXPECTED = {"rmse.png", "cost.png", "std_ratio_reference.png", "std_ratio_elasticity.png",
            "noise_elasticity.png", "calibration_reference.png", "calibration_elasticity.png"}


def test_every_figure_is_written(result, tmp_path):
    paths = plots.make_plots(result, tmp_path)
    assert {p.name for p in paths} == EXPECTED
    for p in paths:
        data = p.read_bytes()
        assert data[:4] == b"\x89PNG" and len(data) > 5000, p.name


def test_legends_stay_off_the_data(result, tmp_path, monkeypatch):
    """Every figure has one figure-level legend and no legend inside an axes."""
    seen = []
    save = plots._save

    def spy(fig, path):
        seen.append((path.name, [ax.get_legend() for ax in fig.axes], list(fig.legends)))
        return save(fig, path)

    monkeypatch.setattr(plots, "_save", spy)
    plots.make_plots(result, tmp_path)
    assert {name for name, _, _ in seen} == EXPECTED
    for name, axes_legends, fig_legends in seen:
        assert all(leg is None for leg in axes_legends), name
        assert len(fig_legends) == 1, name


def test_small_multiples_one_panel_per_net_and_level(result, tmp_path, monkeypatch):
    shapes = {}
    save = plots._save

    def spy(fig, path):
        shapes[path.name] = len([ax for ax in fig.axes if ax.get_visible()])
        return save(fig, path)

    monkeypatch.setattr(plots, "_save", spy)
    plots.make_plots(result, tmp_path)
    assert shapes["calibration_elasticity.png"] == 2 * 2  # nets x well-specified levels
    assert shapes["calibration_reference.png"] == 3  # unet, refinenet, the peer
    assert shapes["std_ratio_elasticity.png"] == 2  # one panel per noise level
    assert shapes["cost.png"] == 2  # one panel per problem


def test_read_result_round_trip(result, tmp_path):
    write_csv(result.rows, tmp_path / "results.csv")
    (tmp_path / "calibration.json").write_text(json.dumps(result.calibration))
    back = plots.read_result(tmp_path)
    assert len(back.rows) == len(result.rows)
    first = back.rows[0]
    assert first["problem"] == "reference" and first["nfe"] == 120
    assert math.isclose(first["std_ratio"], 1.2) and first["ref_sampled"] is False
    assert back.rows[2]["ref_sampled"] is False and back.rows[4]["ref_sampled"] is True
    assert back.rows[-2]["std_ratio"] is None and back.rows[-2]["std_corr"] is None
    assert back.calibration == result.calibration
    out = tmp_path / "figures"
    out.mkdir()
    assert {p.name for p in plots.make_plots(back, out)} == EXPECTED


def test_empty_result_draws_nothing(tmp_path):
    assert plots.make_plots(StudyResult(), tmp_path) == []
