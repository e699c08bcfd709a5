"""The benchmark study (invdiff.evaluation, ``invdiff study``): calibration functions against
known answers, preset validation, and the smoke preset end to end (files, rows, held-out
noise, resume)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import norm

import invdiff
from invdiff.cli import main
from invdiff.errors import CheckpointError, ConfigError, DataError
from invdiff.evaluation import calibration as cal
from invdiff.evaluation.metrics import coverage, coverage_curve
from invdiff.evaluation.references import reference_on
from invdiff.experiment.config import ComponentSpec
from invdiff.study import study
from invdiff.study.peer import sbi_available
from invdiff.study.preset import load_preset, read_preset_text
from invdiff.study.runner import held_out_set, problem_reference

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
    cov = coverage_curve(samples, truth, LEVELS)
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
    cov = coverage_curve(samples, truth, LEVELS)
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


def test_coverage_matches_numpy_quantiles_and_has_no_size_limit():
    g = torch.Generator().manual_seed(3)
    samples, truth = torch.randn(3, 7, 1, 5, generator=g), torch.randn(3, 1, 5, generator=g)
    lo, hi = np.quantile(samples.double().numpy(), [0.05, 0.95], axis=1)
    t = truth.double().numpy()
    assert coverage(samples, truth, 0.9) == pytest.approx(float(((t >= lo) & (t <= hi)).mean()))
    # beyond torch.quantile's 2^24-element limit: samples {0, 1} per pixel, truths 0.5 (inside
    # the central 90 % interval [0.05, 0.95]) on half the pixels and 2 (outside) on the rest
    n_pix = 2**23 + 2
    big = torch.zeros(1, 2, 1, n_pix)
    big[:, 1] = 1.0
    t = torch.full((1, 1, n_pix), 0.5)
    t[..., n_pix // 2:] = 2.0
    assert coverage(big, t, 0.9) == 0.5


def test_tarp_is_the_diagonal_for_calibrated_samples_and_not_for_narrow_ones():
    levels = [0.1, 0.3, 0.5, 0.7, 0.9]
    samples, truth = gaussian_draws(2000, 50, 3, 1.0, seed=5)
    ecp = cal.tarp_coverage(samples, truth, levels)
    assert bool(((ecp - torch.tensor(levels, dtype=torch.float64)).abs() < 0.04).all()), ecp
    narrow, truth = gaussian_draws(2000, 50, 3, 0.3, seed=6)
    ecp = cal.tarp_coverage(narrow, truth, levels)
    # a too narrow posterior puts the truth farther from any reference point than most samples
    assert float((ecp - torch.tensor(levels, dtype=torch.float64)).abs().max()) > 0.2


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
        coverage_curve(samples, truth[:1], [0.5])
    with pytest.raises(DataError, match="levels must lie in"):
        coverage_curve(samples, truth, [0.5, 1.0])
    with pytest.raises(DataError, match="bins=7"):
        cal.rank_histogram(cal.sbc_ranks(samples, truth), 5, 7)
    with pytest.raises(DataError, match="at least 2 samples"):
        cal.sbc_ranks(samples[:, :1], truth)


# -- presets ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["smoke", "cpu", "gpu"])
def test_presets_load_and_share_one_schema(name):
    preset = load_preset(name)
    assert set(preset.problems) == {"reference", "elasticity", "oce"}
    assert set(preset.samplers) == {"annealed-langevin", "predictor-corrector", "heun", "dpm-2m"}
    assert set(preset.nets) == {"unet", "refinenet"}
    cells = preset.cells("elasticity")
    assert (0.05, 0.10) in cells and (0.10, 0.05) in cells
    n = preset.experiment("reference", 0.0234, "unet").problem.prior.params["n"]
    assert n == {"smoke": 8, "cpu": 16, "gpu": 64}[name]


def test_a_preset_extends_another_and_keeps_its_own_runs(tmp_path):
    """``extends`` merges a preset's tables into its base's; the run folders are not shared.
    ``cpu-paper`` is ``cpu`` with the published NCSN recipe for every net and problem, and
    the paper's RefineNet."""
    cpu, paper = load_preset("cpu"), load_preset("cpu-paper")
    assert paper.runs == "runs/study/cpu-paper" != cpu.runs
    assert (paper.samplers, paper.n_samples) == (cpu.samplers, cpu.n_samples)
    assert paper.nets["unet"] == cpu.nets["unet"]
    assert paper.nets["refinenet"].params == {**cpu.nets["refinenet"].params,
                                              "noise_conditional": False, "output": "ncsn"}
    for problem, spec in cpu.problems.items():
        for net in cpu.nets:
            a = cpu.experiment(problem, spec.noise_levels[0], net).training
            b = paper.experiment(problem, spec.noise_levels[0], net).training
            assert (b.loss_weighting, b.y_normalization, b.sigma_sampling) == (
                "sigma2", "channel", "ladder"), (problem, net)
            assert (a.steps, a.lr, a.batch_size) == (b.steps, b.lr, b.batch_size)
    child = tmp_path / "mine.toml"
    child.write_text('extends = "smoke"\nname = "mine"\nn_samples = 9\n'
                     '[base.training]\nsteps = 5\n')
    mine = load_preset(child)
    assert (mine.runs, mine.n_samples, mine.base["training"]["steps"]) == ("runs/study/mine", 9, 5)
    smoke = load_preset("smoke")
    assert mine.base["training"]["batch_size"] == smoke.base["training"]["batch_size"]
    (tmp_path / "a.toml").write_text('extends = "b.toml"\nname = "a"\n')
    (tmp_path / "b.toml").write_text('extends = "a.toml"\nname = "b"\n')
    with pytest.raises(ConfigError, match="loops back"):
        load_preset(tmp_path / "a.toml")
    (tmp_path / "c.toml").write_text('extends = "nope"\nname = "c"\n')
    with pytest.raises(ConfigError, match="unknown study preset 'nope'"):
        load_preset(tmp_path / "c.toml")


def _write_preset(tmp_path: Path, old: str, new: str) -> Path:
    text, _ = read_preset_text("smoke")
    assert old in text
    path = tmp_path / "bad.toml"
    path.write_text(text.replace(old, new, 1))
    return path


@pytest.mark.parametrize("old, new, message", [
    ("misspecified = [[0.05, 0.10]", "misspecified = [[0.07, 0.10]", "not one of noise_levels"),
    ("[samplers.predictor-corrector]\n", "[samplers.predictor-corrector]\nbogus = 1\n",
     "samplers.predictor-corrector"),
    ('params = { ngf = 4 }', 'params = { ngf = 0 }', "problems.reference with net refinenet"),
    ('name = "inclusion-mcmc", params = { n_ref = 1, n_steps = 12, n_walkers = 10 }',
     'name = "linear-gaussian"',
     "problems.elasticity.reference: linear-gaussian does not fit.*not linear-Gaussian"),
    ("n_walkers = 20", "n_walkers = 20, bogus = 1", "problems.oce.reference: invalid param"),
    ('name = "inclusion-mcmc"', 'name = "nonesuch"', "unknown reference 'nonesuch'"),
    ("speckle_smoothing = 0.0", "speckle_smoothing = 1.0", "speckle_smoothing = 0.0"),
])
def test_bad_preset_is_named(tmp_path, old, new, message):
    """Caught before any work: on loading, or (a reference that does not fit its problem)
    when the study starts."""
    path = _write_preset(tmp_path, old, new)
    with pytest.raises(ConfigError, match=message):
        study(path, runs=tmp_path / "runs", quiet=True)
    assert not (tmp_path / "runs").exists()


def test_unknown_problem_and_preset_are_named(tmp_path, capsys):
    known = "known presets: cpu, cpu-gaps, cpu-paper, gpu, gpu-short, smoke"
    with pytest.raises(ConfigError, match=known):
        load_preset("nonesuch")
    with pytest.raises(ConfigError, match="no study preset file at"):
        load_preset(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="--only nonesuch: not in preset smoke"):
        study("smoke", only=["nonesuch"], runs=tmp_path, quiet=True)
    assert main(["study", "smoke", "--nets", "mlp", "--runs", str(tmp_path), "-q"]) == 2
    assert "--nets mlp: not in preset smoke; it has unet" in capsys.readouterr().err


# -- the smoke preset end to end -------------------------------------------------------------
def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.slow
def test_smoke_study_end_to_end_and_resume(tmp_path):
    out, runs = tmp_path / "out", tmp_path / "runs"
    args = ["study", "smoke", "--out", str(out), "--runs", str(runs), "-q"]
    assert main(args) == 0
    rows = _rows(out / "results.csv")
    cells = {(r["problem"], r["net"], r["sampler"], float(r["noise_train"]),
              float(r["noise_test"])) for r in rows if not r.get("peer")}
    preset = load_preset("smoke")
    expected = {(p, n, s, a, b) for p in preset.problems for (a, b) in preset.cells(p)
                for n in preset.nets for s in preset.samplers}
    assert cells == expected and len(expected) == 2 * (4 + 16 + 4)
    # measurements with gaps: every problem's diagonal cells again per scenario, each against
    # its reference given the measured entries, with finite numbers
    gap_rows = [r for r in rows if r["missing"] != "none"]
    gaps = {(r["problem"], r["net"], r["sampler"], float(r["noise_train"]),
             float(r["noise_test"]), r["missing"]) for r in gap_rows}
    assert gaps == {(p, n, s, lv, lv, m) for p, spec in preset.problems.items()
                    for lv in spec.noise_levels for n in preset.nets for s in preset.samplers
                    for m in ("random-0.3", "block-0.25")}
    assert {r["problem"] for r in gap_rows} == {"reference", "elasticity", "oce"}
    for r in gap_rows:
        assert all(math.isfinite(float(r[k])) for k in ("rmse_truth", "rmse_ref", "std_ratio",
                                                        "coverage_90"))
        assert float(r["std_ratio"]) > 0 and int(r["n_ref"]) >= 1
    for r in rows:
        assert 0 <= float(r["coverage_90"]) <= 1 and float(r["seconds"]) > 0
        if not r.get("peer"):  # the memorisation check of every invdiff cell (not the peers)
            assert float(r["memorisation_ratio"]) > 0
    assert any(r.get("iou") for r in rows if r["problem"] == "oce")  # the OCE plugin's metric
    by_ref = {r["problem"]: r["reference"] for r in rows}
    assert by_ref == {"reference": "linear-gaussian", "elasticity": "inclusion-mcmc",
                      "oce": "spheroid-mcmc"}
    assert {r["problem"]: r["reference"] for r in gap_rows} == by_ref

    # held-out measurements carry noise at the TEST level: exact for the absolute-std reference
    smoke = preset.model_copy(update={"runs": str(runs)})
    h = held_out_set(smoke, "reference", 0.0234)
    assert float((h.y - h.y_clean).std()) == pytest.approx(0.0234, rel=0.25)
    lo, hi = (held_out_set(smoke, "elasticity", lv) for lv in (0.05, 0.10))
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
    oce = held_out_set(smoke, "oce", 300.0)
    mc = problem_reference(smoke, oce)
    assert mc.kind == "spheroid-mcmc" and mc.std is not None
    assert mc.mean.shape[1:] == oce.x.shape[1:] and mc.info["sampled"]
    assert float(mc.std[..., :2, :].abs().max()) == 0 and float(mc.std.max()) > 0
    hole = held_out_set(smoke, "oce", 300.0, "block-0.25")  # a 4 x 4 block of wrapped phase
    assert torch.equal(hole.x, oce.x) and int(torch.isnan(hole.y[0]).sum()) == 16
    assert not torch.equal(problem_reference(smoke, hole).mean, mc.mean)  # its own chains
    alg = reference_on(ComponentSpec(name="oce-algebraic"), oce.components, oce.y)
    assert alg.std is None and alg.mean.shape == oce.x.shape

    md = (out / "results.md").read_text()
    assert "invdiff study smoke --out" in md
    for section in ("Measurements with gaps", "Misspecified noise", "Calibration", "Cost",
                    "Peer: sbi NPSE"):
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
    again = {(r["problem"], r["net"], r["sampler"], r["noise_train"], r["noise_test"],
              r["missing"]): r for r in _rows(out / "results.csv")}
    for r in rows:
        key = (r["problem"], r["net"], r["sampler"], r["noise_train"], r["noise_test"],
               r["missing"])
        if key in again:
            assert again[key]["rmse_truth"] == r["rmse_truth"]
            assert again[key]["seconds"] == r["seconds"]
    assert ckpt.stat().st_mtime_ns == stamp


def test_overrides_set_preset_values_and_bad_ones_are_named():
    preset = load_preset("smoke", ["base.training.steps=7", "n_samples=5",
                                         "samplers.annealed-langevin.steps_per_level=2"])
    cfg = preset.experiment("oce", 300.0, "unet")
    assert cfg.training.steps == 7 and preset.n_samples == 5
    assert preset.samplers["annealed-langevin"] == {"steps_per_level": 2}
    with pytest.raises(ConfigError, match="n_samples"):
        load_preset("smoke", ["n_samples=1"])
    own = load_preset("smoke", ["problems.reference.n_samples=30"])
    assert own.samples_for("reference") == 30 and own.samples_for("oce") == own.n_samples
    with pytest.raises(ConfigError, match="n_samples"):
        load_preset("smoke", ["problems.oce.n_samples=1"])
    with pytest.raises(ConfigError, match="rank_bins = 5 exceeds the 4 rank values of 3 "
                                          "samples on problem oce"):
        load_preset("smoke", ["problems.oce.n_samples=3", "rank_bins=5"])
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        load_preset("smoke", ["n_samples"])


def test_one_problem_of_the_smoke_study_and_its_resume(tmp_path):
    """The fast slice of the smoke study (the reference problem, one net) through the Python
    API: its rows, the closed-form reference's own error, and a rerun served from the cache."""
    out, runs = tmp_path / "out", tmp_path / "runs"
    kw = dict(out=out, runs=runs, only=["reference"], nets=["unet"], peer=False, quiet=True)
    result = study("smoke", **kw)
    rows = [r for r in _rows(out / "results.csv") if r["missing"] == "none"]  # complete y
    assert [(r["sampler"], r["reference"]) for r in rows] == [
        ("annealed-langevin", "linear-gaussian"), ("predictor-corrector", "linear-gaussian"),
        ("heun", "linear-gaussian"), ("dpm-2m", "linear-gaussian")]
    scenarios = 1 + len(load_preset("smoke").problems["reference"].missing)  # and with gaps
    assert len(result.rows) == 4 * scenarios and (out / "results.md").exists()
    # the exact posterior's own error, recomputed here from the held-out set
    from invdiff.reference import exact_posterior

    h = held_out_set(load_preset("smoke").model_copy(update={"runs": str(runs)}), "reference",
                     0.0234)
    m = exact_posterior(*h.components).mean(h.y.double()).float()
    err = float((m.double() - h.x.double()).square().mean().sqrt())
    assert float(rows[0]["ref_rmse_truth"]) == pytest.approx(err, rel=1e-6)
    # each sampler's spread calibration, kept beside the checkpoint: the calibrated spread is
    # the raw one times the fitted factor, the mean (so the RMSE) is shared
    ckpt = runs / "reference" / "noise-0.0234" / "unet" / "checkpoints" / "final.pt"
    for r in rows:
        c = float(r["calibration_scale"])
        assert (ckpt.parent / f"calibration-{r['sampler']}.json").is_file()
        assert float(r["std_ratio"]) == pytest.approx(c * float(r["raw_std_ratio"]), rel=1e-4)
        assert int(r["calibration_pairs"]) == load_preset("smoke").calibration_pairs
    assert "Spread calibration: raw and calibrated" in (out / "results.md").read_text()
    stamp = ckpt.stat().st_mtime_ns
    study("smoke", **kw)
    again = [r for r in _rows(out / "results.csv") if r["missing"] == "none"]
    assert [r["rmse_truth"] for r in again] == [r["rmse_truth"] for r in rows]
    assert [r["seconds"] for r in again] == [r["seconds"] for r in rows]  # read back
    assert ckpt.stat().st_mtime_ns == stamp
    # another training recipe in the same run folders never reuses the model trained with
    # this one: the error names the setting that differs
    with pytest.raises(CheckpointError, match="lr_decay"):
        study("smoke", **kw, overrides=["base.training.lr_decay=constant"])
    assert ckpt.stat().st_mtime_ns == stamp
    # a problem's own sample count: new cells from the same model, named in the header
    study("smoke", **kw, overrides=["problems.reference.n_samples=12"])
    more = _rows(out / "results.csv")
    assert {r["n_samples"] for r in more} == {"12"} and ckpt.stat().st_mtime_ns == stamp
    assert "8 samples per measurement (reference: 12)" in (out / "results.md").read_text()


def test_a_problem_takes_the_reference_its_prior_names_unless_the_preset_says(tmp_path):
    from invdiff.experiment.run import Experiment

    def spec(preset):  # the run layer's choice for the problem's experiment
        return Experiment(preset.experiment("reference", 0.0234)).reference_spec

    line = 'reference = { name = "linear-gaussian" }\n'
    unset = load_preset(_write_preset(tmp_path, line, ""))  # the prior's own
    assert spec(unset) == ComponentSpec(name="linear-gaussian")
    off = load_preset("smoke", ['problems.reference.reference="none"'])
    assert spec(off) is None
    picked = load_preset("smoke", ['problems.reference.reference={ name = "oce-algebraic" }'])
    assert spec(picked).name == "oce-algebraic"
    with pytest.raises(ConfigError, match="problems.reference.reference: .*does not fit"):
        study(picked, runs=tmp_path / "runs", only=["reference"], quiet=True)


def test_the_objective_axis_trains_each_net_with_each_objective(tmp_path):
    """objectives = {dsm, flow-matching}: each net is trained with both (the dsm run keeps the
    plain net name and folder), every sampler samples both, results.csv names the objective."""
    if "flow-matching" not in invdiff.available("objective"):
        pytest.skip("the invdiff-flow plugin is not installed")
    out = tmp_path / "out"
    study("smoke", runs=tmp_path / "runs", out=out, only=["reference"], nets=["unet"],
          quiet=True, peer=False,
          overrides=["objectives={ dsm = {}, flow-matching = {} }",
                     "samplers={ heun = { steps = 6 } }"])
    rows = _rows(out / "results.csv")
    assert {(r["net"], r["objective"]) for r in rows} == {
        ("unet", "dsm"), ("unet+flow-matching", "flow-matching")}
    assert all(float(r["std_ratio"]) > 0 for r in rows)
    run = tmp_path / "runs" / "reference" / "noise-0.0234"
    assert (run / "unet" / "checkpoints" / "final.pt").is_file()
    assert (run / "unet+flow-matching" / "checkpoints" / "final.pt").is_file()


def test_cpu_gaps_is_cpu_with_masked_models_and_gappy_measurements():
    """Measurements with gaps have their own preset: masking costs accuracy on complete
    measurements, so the headline `cpu` study keeps unmasked models."""
    cpu, gaps = load_preset("cpu"), load_preset("cpu-gaps")
    assert gaps.runs != cpu.runs and gaps.nets == cpu.nets and gaps.samplers == cpu.samplers
    for problem, spec in cpu.problems.items():
        level = spec.noise_levels[0]
        assert spec.missing == [] and gaps.problems[problem].missing == ["random-0.3",
                                                                         "block-0.25"]
        assert not cpu.experiment(problem, level, "unet").training.masking
        assert gaps.experiment(problem, level, "unet").training.masking


def test_a_study_of_flow_matching_alone_simulates_its_data_as_score_matching_would():
    """objectives = {flow-matching} only: no run is named by the plain net, yet the data of a
    level are those of the score-matching study (the objective does not change them)."""
    plain = load_preset("smoke")
    flow = load_preset("smoke", ["objectives={ flow-matching = {} }"])
    assert flow.runs_of() == ["unet+flow-matching", "refinenet+flow-matching"]
    a, b = plain.experiment("reference", 0.0234), flow.experiment("reference", 0.0234)
    assert a.model_dump() == b.model_dump()
    assert flow.experiment("reference", 0.0234, "unet+flow-matching").training.objective == (
        "flow-matching")
