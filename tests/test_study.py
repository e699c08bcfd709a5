"""The benchmark study (benchmarks/study.py): calibration functions against known answers,
preset validation, and the smoke preset end to end (files, rows, held-out noise, resume)."""

from __future__ import annotations

import csv
import math
import sys
from pathlib import Path

import pytest
import torch
from scipy.stats import norm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from study import calibration as cal  # noqa: E402
from study.cli import main  # noqa: E402
from study.peer import sbi_available  # noqa: E402
from study.preset import load_preset  # noqa: E402

from invdiff.errors import ConfigError, DataError  # noqa: E402

LEVELS = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]


def gaussian_draws(m: int, n: int, d: int, sample_std: float, seed: int = 0):
    """Truths N(0, 1) and n samples N(0, sample_std^2) each: ``(m, n, 1, d)``, ``(m, 1, d)``."""
    g = torch.Generator().manual_seed(seed)
    truth = torch.randn(m, 1, d, generator=g, dtype=torch.float64)
    samples = sample_std * torch.randn(m, n, 1, d, generator=g, dtype=torch.float64)
    return samples, truth


# -- calibration: known answers --------------------------------------------------------------
def test_calibrated_samples_cover_exactly_the_order_statistic_fraction():
    # n = 101 samples: the interpolated quantiles at (1 -+ a)/2 fall on order statistics
    # X_(50-50a) .. X_(50+50a) (0-based), and for exchangeable draws the truth lies between two
    # order statistics i < j with probability (j - i) / (n + 1): coverage = 100 a / 102.
    samples, truth = gaussian_draws(40, 101, 500, 1.0)
    cov = cal.coverage_curve(samples, truth, LEVELS)
    n_draws = truth.numel()
    for a, c in zip(LEVELS, cov.tolist(), strict=True):
        p = 100 * a / 102
        assert abs(c - p) < 4 * math.sqrt(p * (1 - p) / n_draws), (a, c, p)


def test_calibrated_samples_give_uniform_ranks():
    samples, truth = gaussian_draws(40, 19, 500, 1.0, seed=1)
    ranks = cal.sbc_ranks(samples, truth)
    counts, expected = cal.rank_histogram(ranks, 19, 5)  # 20 rank values, 4 per bin
    assert torch.equal(expected, torch.full((5,), truth.numel() / 5, dtype=torch.float64))
    sd = (expected * (1 - 0.2)).sqrt()
    assert bool(((counts - expected).abs() < 4 * sd).all()), counts
    stat, p = cal.chi2_uniformity(ranks, 19, 5)
    assert stat < 18.5  # chi-square(4) 0.999 quantile: uniform ranks stay below it
    assert cal.ks_uniformity(ranks, 19) < 0.02


def test_too_narrow_posterior_under_covers_as_the_closed_form_says():
    # samples N(0, s^2), truth N(0, 1): the central a-interval is +-s z_{(1+a)/2}, which holds
    # the truth with probability 2 Phi(s z) - 1 < a.
    s = 0.5
    samples, truth = gaussian_draws(20, 400, 500, s, seed=2)
    cov = cal.coverage_curve(samples, truth, LEVELS)
    for a, c in zip(LEVELS, cov.tolist(), strict=True):
        expect = 2 * norm.cdf(s * norm.ppf((1 + a) / 2)) - 1
        assert c < a - 0.04
        assert abs(c - expect) < 0.02, (a, c, expect)
    ranks = cal.sbc_ranks(samples, truth)
    counts, expected = cal.rank_histogram(ranks, 400, 10)
    # U shape: the outer bins hold far more than their share, the middle ones far less
    assert counts[0] > 2 * expected[0] and counts[-1] > 2 * expected[-1]
    assert counts[5] < 0.6 * expected[5]
    assert cal.chi2_uniformity(ranks, 400, 10)[1] < 1e-12
    assert cal.ks_uniformity(ranks, 400) > 0.1


def test_ranks_histogram_and_ks_on_a_hand_example():
    samples = torch.tensor([[[0.0], [1.0], [2.0]]])  # (M=1, n=3, D=1)
    truths = [(-1.0, 0), (0.5, 1), (1.5, 2), (9.0, 3)]
    for t, r in truths:
        assert int(cal.sbc_ranks(samples, torch.tensor([[t]]))) == r
    ranks = torch.tensor([0, 0, 1, 3])  # n = 3: uniform CDF (k+1)/4
    # ECDF at k = 0..3: 0.5, 0.75, 0.75, 1 -> max |diff| = 0.25 (at k = 0 and k = 2)
    assert cal.ks_uniformity(ranks, 3) == pytest.approx(0.25)
    counts, expected = cal.rank_histogram(ranks, 3, 2)  # groups {0, 1}, {2, 3}
    assert counts.tolist() == [3.0, 1.0] and expected.tolist() == [2.0, 2.0]
    assert cal.chi2_uniformity(ranks, 3, 2)[0] == pytest.approx(1.0)


def test_calibration_bad_input_is_named():
    samples, truth = gaussian_draws(2, 5, 3, 1.0)
    with pytest.raises(DataError, match="do not match"):
        cal.coverage_curve(samples, truth[:1], [0.5])
    with pytest.raises(DataError, match="levels must lie in"):
        cal.coverage_curve(samples, truth, [0.5, 1.0])
    with pytest.raises(DataError, match="bins=7"):
        cal.rank_histogram(cal.sbc_ranks(samples, truth), 5, 7)
    with pytest.raises(DataError, match="at least 2 samples"):
        cal.sbc_ranks(samples[:, :1], truth)


# -- presets ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["smoke", "cpu", "gpu"])
def test_presets_load_and_share_one_schema(name):
    preset = load_preset(name, ROOT)
    assert set(preset.problems) == {"reference", "elasticity", "oce"}
    assert set(preset.samplers) == {"annealed-langevin", "predictor-corrector"}
    assert set(preset.nets) == {"unet", "refinenet"}
    cells = preset.cells("elasticity")
    assert (0.05, 0.10) in cells and (0.10, 0.05) in cells
    n = preset.experiment("reference", 0.0234, "unet").problem.prior.params["n"]
    assert n == {"smoke": 8, "cpu": 16, "gpu": 64}[name]


def _write_preset(tmp_path: Path, old: str, new: str) -> Path:
    text = (ROOT / "configs" / "study" / "smoke.toml").read_text()
    assert old in text
    path = tmp_path / "bad.toml"
    path.write_text(text.replace(old, new, 1))
    return path


@pytest.mark.parametrize("old, new, message", [
    ("misspecified = [[0.05, 0.10]", "misspecified = [[0.07, 0.10]", "not one of noise_levels"),
    ("[samplers.predictor-corrector]\n", "[samplers.predictor-corrector]\nbogus = 1\n",
     "samplers.predictor-corrector"),
    ('params = { ngf = 4 }', 'params = { ngf = 0 }', "problems.reference with net refinenet"),
    ('noise_param = "level"', 'noise_param = "std"', "noise_param must be 'level'"),
    ("speckle_smoothing = 0.0", "speckle_smoothing = 1.0", "speckle_smoothing = 0.0"),
])
def test_bad_preset_is_named(tmp_path, old, new, message):
    with pytest.raises(ConfigError, match=message):
        load_preset(_write_preset(tmp_path, old, new))


def test_unknown_problem_and_preset_are_named(tmp_path):
    with pytest.raises(ConfigError, match="known presets: .*smoke"):
        load_preset("nonesuch", ROOT)
    with pytest.raises(ConfigError, match="--only nonesuch: not in preset smoke"):
        main(["smoke", "--only", "nonesuch", "--runs", str(tmp_path), "--quiet"])
    with pytest.raises(ConfigError, match="--nets mlp: not in preset smoke; it has unet"):
        main(["smoke", "--nets", "mlp", "--runs", str(tmp_path), "--quiet"])


# -- the smoke preset end to end -------------------------------------------------------------
def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_smoke_study_end_to_end_and_resume(tmp_path):
    out, runs = tmp_path / "out", tmp_path / "runs"
    args = ["smoke", "--out", str(out), "--runs", str(runs), "--quiet"]
    assert main(args) == 0
    rows = _rows(out / "results.csv")
    cells = {(r["problem"], r["net"], r["sampler"], float(r["noise_train"]),
              float(r["noise_test"])) for r in rows if not r["net"].startswith("sbi")}
    preset = load_preset("smoke", ROOT)
    expected = {(p, n, s, a, b) for p in preset.problems for (a, b) in preset.cells(p)
                for n in preset.nets for s in preset.samplers}
    assert cells == expected and len(expected) == 4 + 16 + 4
    for r in rows:
        assert 0 <= float(r["coverage_90"]) <= 1 and float(r["seconds"]) > 0
    by_ref = {r["problem"]: r["reference"] for r in rows}
    assert by_ref == {"reference": "exact", "elasticity": "mcmc", "oce": "mcmc-oce"}

    # held-out measurements carry noise at the TEST level: exact for the absolute-std reference
    from study.references import held_out

    h = held_out(preset.model_copy(update={"runs": str(runs)}), "reference", 0.0234)
    assert float((h.y - h.y_clean).std()) == pytest.approx(0.0234, rel=0.25)
    lo, hi = (held_out(preset.model_copy(update={"runs": str(runs)}), "elasticity", lv)
              for lv in (0.05, 0.10))
    assert torch.equal(lo.x, hi.x)  # same truths at every level
    ratio = float((hi.y - hi.y_clean).std() / (lo.y - lo.y_clean).std())
    assert ratio == pytest.approx(2.0, rel=0.3)

    # the exact posterior's own error is the closed form's scale: E|m - x|^2 = mean diag(S)
    from invdiff.reference import exact_posterior

    post = exact_posterior(*h.components)
    ref_rmse = float(next(r for r in rows if r["problem"] == "reference")["ref_rmse_truth"])
    assert 0.5 < ref_rmse / float(post.std.square().mean().sqrt()) < 1.5

    # the OCE references: the MCMC one has a std field (zero in the known layer), the
    # algebraic one (kept for presets that ask for it) is a point estimate on every measurement
    from study.references import algebraic_reference, reference

    smoke = preset.model_copy(update={"runs": str(runs)})
    oce = held_out(smoke, "oce", 300.0)
    mc = reference(smoke, oce)
    assert mc.kind == "mcmc-oce" and mc.std is not None and mc.mean.shape[1:] == oce.x.shape[1:]
    assert float(mc.std[..., :2, :].abs().max()) == 0 and float(mc.std.max()) > 0
    alg = algebraic_reference(smoke, oce, runs / "oce" / "references")
    assert alg.std is None and alg.mean.shape == oce.x.shape

    md = (out / "results.md").read_text()
    assert "python benchmarks/study.py smoke --out" in md
    for section in ("Misspecified noise", "Calibration", "Cost", "Peer: sbi NPSE"):
        assert section in md
    if sbi_available() is None:
        assert any(r["net"] == "sbi-npse-mlp" for r in rows)
    else:
        assert "sbi NPSE skipped" in md
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert {"rmse.png", "cost.png", "noise_elasticity.png", "calibration_oce.png"} <= set(pngs)
    assert all((out / p).read_bytes()[:4] == b"\x89PNG" for p in pngs)

    # a rerun resumes: no training, no sampling, the same numbers
    ckpt = runs / "elasticity" / "noise-0.05" / "unet" / "checkpoints" / "final.pt"
    stamp = ckpt.stat().st_mtime_ns
    assert main([*args, "--only", "reference", "elasticity", "--no-peer"]) == 0
    again = {(r["problem"], r["net"], r["sampler"], r["noise_train"], r["noise_test"]): r
             for r in _rows(out / "results.csv")}
    for r in rows:
        key = (r["problem"], r["net"], r["sampler"], r["noise_train"], r["noise_test"])
        if key in again:
            assert again[key]["rmse_truth"] == r["rmse_truth"]
            assert again[key]["seconds"] == r["seconds"]
    assert ckpt.stat().st_mtime_ns == stamp


def test_overrides_set_preset_values_and_bad_ones_are_named():
    preset = load_preset("smoke", ROOT, ["base.training.steps=7", "n_samples=5",
                                         "samplers.annealed-langevin.steps_per_level=2"])
    cfg = preset.experiment("oce", 300.0, "unet")
    assert cfg.training.steps == 7 and preset.n_samples == 5
    assert preset.samplers["annealed-langevin"] == {"steps_per_level": 2}
    with pytest.raises(ConfigError, match="n_samples"):
        load_preset("smoke", ROOT, ["n_samples=1"])
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        load_preset("smoke", ROOT, ["n_samples"])
