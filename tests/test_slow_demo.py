"""The README demo end to end (slow, part of CI's slow run): elastography of a stiff circular
inclusion at 16 x 16 (FEM, 5% noise), a small U-Net trained for 1500 steps, predictor-corrector
posteriors of the held-out measurements.

What must hold: the posterior mean is far closer to the true field than the prior mean is
(the data are used), and the posterior's 90% intervals cover the truth (the uncertainty is not
overconfident). Measured with the demo's current config (flow matching, y per pixel, cosine
learning-rate decay) on one thread: posterior-mean RMSE 0.124 over the 4 held-out fields against
0.669 for the prior mean, 90% coverage 0.98; against the MCMC reference the std ratio is 1.45 and
the std-field correlation 0.98 (score matching: 0.129, 0.98, 1.59, 0.97).
"""

from __future__ import annotations

import json

import pytest

from invdiff.data import load_dataset
from invdiff.evaluation.metrics import rms
from invdiff.experiment import demo
from invdiff.experiment import run as pipeline
from invdiff.runtime import torch_threads


@pytest.mark.slow
def test_demo_recovers_the_inclusion(tmp_path):
    out = tmp_path / "demo"
    cfg = demo.demo_config("elasticity", out=out)
    # CI has both cores to itself: train and sample on both (the demo's default is one thread)
    cfg.training.threads = cfg.sampling.threads = 2
    with torch_threads(2):  # simulation and the MCMC reference
        metrics = pipeline.run_run(cfg, progress=False)
    train = load_dataset(out / "data" / "train.npz")
    test = load_dataset(out / "data" / "test.npz")
    prior_mean_rmse = rms(test.x - train.x.mean(0, keepdim=True))
    assert metrics["rmse_truth"] <= 0.6 * prior_mean_rmse, (metrics, prior_mean_rmse)
    assert metrics["coverage_90"] >= 0.8, metrics
    assert json.loads((out / "metrics.json").read_text())["nfe"] == metrics["nfe"]
    assert (out / "figures" / "posterior_0.png").exists()
    _demo_folder_serves_invdiff_infer(out, test, tmp_path)


def _demo_folder_serves_invdiff_infer(out, test, tmp_path):
    """The demo's run folder answers `invdiff infer`: its own held-out measurements are in
    distribution, the same in other units (x 1000) are flagged."""
    import numpy as np

    from invdiff.cli import main

    np.save(tmp_path / "held_out.npy", test.y.numpy())
    np.save(tmp_path / "in_mm.npy", test.y.numpy() * 1000)
    res = tmp_path / "infer"
    assert main(["infer", str(out), str(tmp_path / "held_out.npy"), str(tmp_path / "in_mm.npy"),
                 "--out", str(res), "-q", "--n", "32"]) == 0
    rows = json.loads((res / "report.json").read_text())["measurements"]
    m = len(test)
    # held-out measurements: about 1% false alarms (docs/results/inference-checks.md)
    assert sum(r["out_of_distribution"] for r in rows[:m]) <= 1
    assert all(r["out_of_distribution"] for r in rows[m:])


@pytest.mark.slow
@pytest.mark.parametrize("problem", ["elasticity", "reference"])
def test_quick_demo_runs_and_a_second_run_reuses_it(tmp_path, capsys, monkeypatch, problem):
    """`invdiff demo --quick` end to end through the CLI (seconds), in its own default folder;
    it says that its numbers are a smoke test and where the figures are; run again, it reuses
    every stage and says so."""
    from invdiff.cli import main

    monkeypatch.chdir(tmp_path)
    argv = ["demo", "--quick", "-q", "--problem", problem]
    assert main(argv) == 0
    out = tmp_path / demo.demo_out_dir(problem, quick=True)
    first = capsys.readouterr()
    assert json.loads(first.out)["n_measurements"] == 2
    assert "smoke test" in first.err and f"{out.relative_to(tmp_path)}/figures" in first.err
    assert all((out / "figures" / f).exists() for f in ("posterior_0.png", "loss.png"))
    assert not (tmp_path / "runs" / "demo").exists()  # never the full demo's folder
    assert main(argv) == 0
    second = capsys.readouterr()
    assert json.loads(second.out) == json.loads(first.out)
    assert second.err.count("reused") == 3
