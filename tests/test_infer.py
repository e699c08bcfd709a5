"""Your own measurements: `invdiff infer`, `invdiff.load_model`, `invdiff.infer`, and the two
checks they report (out of distribution, posterior predictive) against independent truths."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy import stats

import invdiff
from invdiff.cli import main
from invdiff.evaluation.ood import Typicality
from invdiff.evaluation.ppc import posterior_predictive_check
from invdiff.experiment.config import load_config
from invdiff.experiment.run import run_run
from invdiff.integrity import file_sha256
from invdiff.reference import make_problem
from tests.test_pipeline import TINY


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A tiny trained run folder of the reference problem (its numbers mean nothing)."""
    root = tmp_path_factory.mktemp("infer")
    path = root / "tiny.toml"
    path.write_text(TINY.format(out=root / "run"))
    cfg = load_config(path)
    cfg.output.figures = False
    cfg.data.n_train, cfg.data.n_val = 160, 64  # enough held-out measurements for the test
    run_run(cfg, progress=False)
    return root / "run"


@pytest.fixture
def measurements(run_dir, tmp_path):
    test = invdiff.load_dataset(run_dir / "data" / "test.npz")
    np.save(tmp_path / "one.npy", test.y[0].numpy())
    np.savez(tmp_path / "batch.npz", y=test.y[:2].numpy())
    return test, tmp_path


def test_infer_writes_the_posterior_and_a_report_per_measurement(run_dir, measurements,
                                                                 capsys):
    test, d = measurements
    out = d / "out"
    assert main(["infer", str(run_dir), str(d / "one.npy"), str(d / "batch.npz"),
                 "--out", str(out), "-q", "--n", "6"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 3 and printed[0].startswith("0 one.npy: ")
    with np.load(out / "posterior.npz") as f:
        assert f["mean"].shape == (3, *test.x_shape) and f["samples"].shape[:2] == (3, 6)
        assert {"std", "q05", "q50", "q95", "residual", "sha256"} <= set(f.files)
        assert np.array_equal(f["y"][1:], test.y[:2].numpy())  # input order
        assert np.all(f["q05"] <= f["q95"])
    report = json.loads((out / "report.json").read_text())
    assert report["model"]["checkpoint_sha256"] == file_sha256(run_dir / "checkpoints/final.pt")
    assert report["n_samples"] == 6 and report["nfe"] > 0
    rows = report["measurements"]
    assert [r["source"] for r in rows] == [str(d / "one.npy")] + [str(d / "batch.npz")] * 2
    for r in rows:
        assert isinstance(r["out_of_distribution"], bool) and 0 < r["ppc_pvalue"] <= 1
        assert r["ood_threshold"][0] < r["ood_threshold"][1] and 0 <= r["ood_percentile"] <= 100
    assert len(list((out / "figures").glob("measurement_*.png"))) == 3


def test_no_samples_keeps_the_summaries_only(run_dir, measurements):
    _, d = measurements
    assert main(["infer", str(run_dir), str(d / "one.npy"), "--out", str(d / "o"), "-q",
                 "--no-samples", "--no-figures", "--n", "4"]) == 0
    with np.load(d / "o" / "posterior.npz") as f:
        assert "samples" not in f.files and f["mean"].shape[0] == 1
    assert not (d / "o" / "figures").exists()


def _bad_inputs(d, run_dir):
    good = np.load(d / "one.npy")
    np.save(d / "shape.npy", good[:, :4])
    np.save(d / "complex.npy", good.astype(np.complex64))
    np.save(d / "ints.npy", good.astype(np.int32))
    nan = good.copy()
    nan[0, 1, 1] = np.nan
    np.save(d / "nan.npy", nan)
    np.save(d / "empty.npy", np.zeros((0, *good.shape), np.float32))
    np.savez(d / "noy.npz", x=good)
    (d / "garbage.npy").write_bytes(b"not numpy at all")
    (d / "unfinished" / "checkpoints").mkdir(parents=True)
    (d / "unfinished" / "checkpoints" / "last.pt").write_bytes(b"x")
    bad_ckpt = d / "corrupt.pt"
    raw = bytearray((run_dir / "checkpoints/final.pt").read_bytes())
    raw[len(raw) // 2: len(raw) // 2 + 64] = bytes(64)
    bad_ckpt.write_bytes(bytes(raw))
    one = str(d / "one.npy")
    return {
        "missing": ([str(run_dir), str(d / "nope.npy")], "no such file"),
        "unreadable": ([str(run_dir), str(d / "garbage.npy")], "not a readable NumPy file"),
        "npz without y": ([str(run_dir), str(d / "noy.npz")], "has no array 'y'"),
        "wrong shape": ([str(run_dir), str(d / "shape.npy")], "expects measurements of shape"),
        "complex": ([str(run_dir), str(d / "complex.npy")], "real numbers"),
        "integers": ([str(run_dir), str(d / "ints.npy")], "floating-point"),
        "nan": ([str(run_dir), str(d / "nan.npy")], "training.masking"),
        "empty": ([str(run_dir), str(d / "empty.npy")], "is empty"),
        "unfinished model": ([str(d / "unfinished"), one], "no finished model"),
        "corrupt checkpoint": ([str(bad_ckpt), one], "damaged"),
    }


@pytest.mark.parametrize("case", ["missing", "unreadable", "npz without y", "wrong shape",
                                  "complex", "integers", "nan", "empty", "unfinished model",
                                  "corrupt checkpoint"])
def test_bad_input_is_one_line_exit_2_and_no_output(run_dir, measurements, capsys, case):
    _, d = measurements
    args, says = _bad_inputs(d, run_dir)[case]
    out = d / f"out-{case.replace(' ', '-')}"
    assert main(["infer", *args, "--out", str(out), "-q"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("invdiff infer: error: ") and err.count("\n") == 1, err
    assert says in err and "Traceback" not in err
    assert not out.exists()  # nothing written


def test_python_api_takes_numpy_with_or_without_a_batch_axis(run_dir, measurements):
    test, _ = measurements
    model = invdiff.load_model(run_dir)
    one = invdiff.infer(model, test.y[0].numpy(), n=4, checks=False)
    two = invdiff.infer(model, test.y[:2].numpy(), n=4, checks=False)
    assert one.posterior.samples.shape[:2] == (1, 4)
    # measurement 0 is seeded alike alone and in a batch
    assert torch.equal(one.posterior.samples[0], two.posterior.samples[0])
    post = invdiff.sample_posterior(model, test.y[0].numpy(), n=3, progress=False)
    assert post.samples.shape[:2] == (1, 3)


def test_load_model_refuses_a_folder_without_a_model(tmp_path):
    with pytest.raises(invdiff.CheckpointError, match="no finished model"):
        invdiff.load_model(tmp_path)


# -- the checks against independent truths ---------------------------------------------------
def _pairs(prob, n, g):
    x = prob.prior.sample(n, generator=g)
    clean = prob.forward_model(x)
    return x, clean, prob.noise_model(clean, generator=g)


def test_ppc_pvalues_are_uniform_with_the_exact_posterior():
    """On the linear-Gaussian problem the exact posterior makes the sampled posterior
    predictive p-value uniform (KS test over 200 measurements), while 10x the noise is
    caught (p <= 0.05 for every measurement)."""
    prob = make_problem(n=8, noise_level=0.1)
    g = torch.Generator().manual_seed(3)
    _, clean, y = _pairs(prob, 200, g)
    res = posterior_predictive_check(y, prob.posterior.sample(y, 16, generator=g),
                                     prob.forward_model, prob.noise_model, generator=g)
    ks = stats.kstest(res.pvalue.numpy(), "uniform")
    assert ks.pvalue > 0.01, ks  # measured: 0.15 with this seed
    assert 0.4 < float(res.pvalue_classic.mean()) < 0.6  # the classical one is conservative
    loud = clean + 10 * (y - clean)
    res10 = posterior_predictive_check(loud, prob.posterior.sample(loud, 16, generator=g),
                                       prob.forward_model, prob.noise_model, generator=g)
    assert bool((res10.pvalue <= 0.05).all())


def test_typicality_flags_other_units_and_noise_but_not_held_out_measurements():
    prob = make_problem(n=8, noise_level=0.1)
    g = torch.Generator().manual_seed(5)
    fit, cal, held = (_pairs(prob, n, g) for n in (2000, 500, 500))
    test = Typicality.fit(fit[2]).calibrate(cal[2], alpha=0.01)
    rate = lambda y: float(test.flags(test.score(y)).double().mean())  # noqa: E731
    assert rate(held[2]) <= 0.05  # not flagged: >= 95% (measured: 99%)
    assert rate(held[2] * 1000) == 1.0 and rate(held[2] * 0.001) == 1.0
    assert rate(held[1] + 10 * (held[2] - held[1])) == 1.0


def test_typicality_flags_a_lognormal_specimen_under_an_inclusion_model():
    """Elastography at 32 x 32: measurements of log-normal stiffness fields against a test
    fitted on circular-inclusion measurements."""
    from invdiff.data.simulation import simulate

    fem = invdiff.create("forward_model", "elasticity-fem", grid=32, compression=0.01)
    noise = invdiff.create("noise_model", "gaussian", level=0.05)
    circ = simulate(invdiff.create("prior", "circular-inclusion", n=32), fem, noise, n=700,
                    seed=0, progress=False)
    logn = simulate(invdiff.create("prior", "lognormal-field", n=32), fem, noise, n=60,
                    seed=1, progress=False)
    norm = circ.normalization.with_y_per_pixel(circ.y)
    y = norm.normalize_y(circ.y)
    test = Typicality.fit(y[200:]).calibrate(y[100:200])
    held = float(test.flags(test.score(y[:100])).double().mean())
    caught = float(test.flags(test.score(norm.normalize_y(logn.y))).double().mean())
    assert held <= 0.05 and caught >= 0.6  # measured: 0.0-0.01 and 0.84-0.85


@pytest.mark.slow
def test_infer_shares_measurements_out_over_two_processes(run_dir, measurements, capsys):
    """`invdiff infer --nproc 2` gives the same posterior as one process (measurement m's
    chains are seeded by (seed, m) wherever it is sampled)."""
    _, d = measurements
    one, two = d / "one-process", d / "two-processes"
    args = [str(run_dir), str(d / "batch.npz"), "-q", "--n", "6", "--no-figures"]
    assert main(["infer", *args, "--out", str(one)]) == 0
    assert main(["infer", *args, "--out", str(two), "--nproc", "2"]) == 0
    with np.load(one / "posterior.npz") as a, np.load(two / "posterior.npz") as b:
        assert np.array_equal(a["samples"], b["samples"])
    rows = json.loads((two / "report.json").read_text())["measurements"]
    assert len(rows) == 2 and all(isinstance(r["out_of_distribution"], bool) for r in rows)


def test_a_run_keeps_its_spread_calibration_and_infer_applies_it(run_dir, measurements):
    """`invdiff run` fits the spread calibration on validation pairs, keeps it beside the
    checkpoint and reports raw and calibrated metrics; `invdiff.infer` with the run's own
    sampling settings applies it (same mean, spread scaled), and not for other settings."""
    from invdiff.evaluation.recalibration import Calibration

    test, _ = measurements
    metrics = json.loads((run_dir / "metrics.json").read_text())
    sampler = metrics["sampler"]
    stored = Calibration.load(run_dir / "checkpoints" / f"calibration-{sampler}.json")
    assert metrics["calibration"]["scale"] == stored.scale and stored.n_pairs == 32
    assert stored.fitted_for["checkpoint_sha256"] == metrics["checkpoint_sha256"]
    assert stored.crps_calibrated <= stored.crps_raw  # c = 1 is among the candidates
    assert metrics["raw"]["crps"] > 0 and "guarantee" in metrics["calibration"]
    model = invdiff.load_model(run_dir)
    applied = invdiff.infer(model, test.y[:2], checks=False)
    raw = invdiff.infer(model, test.y[:2], checks=False, calibration=None)
    assert applied.report["calibration"]["scale"] == stored.scale
    assert raw.report["calibration"] is None
    assert torch.allclose(applied.posterior.mean, raw.posterior.mean, atol=1e-5)
    assert torch.allclose(applied.posterior.std, stored.scale * raw.posterior.std, rtol=1e-4,
                          atol=1e-6)
    other = invdiff.infer(model, test.y[:2], n=6, checks=False)
    assert other.report["calibration"] is None
    assert "other settings" in other.report["calibration_note"]


def test_infer_names_a_calibration_it_cannot_use(run_dir, measurements):
    test, _ = measurements
    model = invdiff.load_model(run_dir)
    with pytest.raises(invdiff.ConfigError, match="calibration='yes'.*stored"):
        invdiff.infer(model, test.y[:1], checks=False, calibration="yes")
