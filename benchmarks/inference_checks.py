"""False-alarm and detection rates of the two checks of ``invdiff infer``, measured.

    .venv/bin/python benchmarks/inference_checks.py            # about a minute, one thread

Out of distribution (:mod:`invdiff.evaluation.ood`, alpha = 0.01): the typicality test is
fitted on training measurements and calibrated on held-out ones, then applied to fresh held-out
measurements (false alarms) and to measurements that are not like the training ones: the same
measurements in other units (x 1000, x 0.001), with 10x the noise, and (elastography at
32 x 32) specimens with a log-normal stiffness field under a test fitted on circular
inclusions.

Posterior predictive check (:mod:`invdiff.evaluation.ppc`): on the linear-Gaussian reference
problem with its exact posterior, the sampled p-value must be uniform (KS test), and 10x the
noise must be caught. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import sys

import torch
from scipy import stats

import invdiff
from invdiff.data.simulation import simulate
from invdiff.evaluation.ood import Typicality
from invdiff.evaluation.ppc import posterior_predictive_check
from invdiff.reference import make_problem
from invdiff.runtime import torch_threads


def rate(test: Typicality, y: torch.Tensor) -> float:
    return float(test.flags(test.score(y)).double().mean())


def reference_rows(n_fit: int, n_held: int) -> list[tuple[str, str, int, float]]:
    prob = make_problem(n=16, noise_level=0.05)
    ds = simulate(prob.prior, prob.forward_model, prob.noise_model, n=n_fit + 2 * n_held,
                  seed=0, progress=False)
    y, clean = ds.y, ds.y_clean
    fit, cal, held = y[2 * n_held:], y[:n_held], y[n_held:2 * n_held]
    test = Typicality.fit(fit).calibrate(cal)
    loud = clean[n_held:2 * n_held] + 10 * (held - clean[n_held:2 * n_held])
    return [("reference 16x16", "held-out (false alarm)", n_held, rate(test, held)),
            ("reference 16x16", "x 1000", n_held, rate(test, held * 1000)),
            ("reference 16x16", "x 0.001", n_held, rate(test, held * 0.001)),
            ("reference 16x16", "10x noise", n_held, rate(test, loud))]


def elasticity_rows(grid: int, n_fit: int, n_held: int) -> list[tuple[str, str, int, float]]:
    fem = invdiff.create("forward_model", "elasticity-fem", grid=grid, compression=0.01)
    noise = invdiff.create("noise_model", "gaussian", level=0.05)
    circ = invdiff.create("prior", "circular-inclusion", n=grid)
    ds = simulate(circ, fem, noise, n=n_fit + 2 * n_held, seed=0, progress=False)
    logn = simulate(invdiff.create("prior", "lognormal-field", n=grid), fem, noise, n=n_held,
                    seed=1, progress=False)
    norm = ds.normalization.with_y_per_pixel(ds.y)  # the demo's y_normalization = "pixel"
    y = norm.normalize_y(ds.y)
    test = Typicality.fit(y[2 * n_held:]).calibrate(y[:n_held])
    held = y[n_held:2 * n_held]
    name = f"elasticity {grid}x{grid}, inclusions"
    loud_raw = ds.y_clean[n_held:2 * n_held] + 10 * (ds.y - ds.y_clean)[n_held:2 * n_held]
    return [(name, "held-out (false alarm)", n_held, rate(test, held)),
            (name, "x 1000", n_held, rate(test, norm.normalize_y(ds.y[n_held:2 * n_held] * 1e3))),
            (name, "x 0.001", n_held,
             rate(test, norm.normalize_y(ds.y[n_held:2 * n_held] * 1e-3))),
            (name, "10x noise", n_held, rate(test, norm.normalize_y(loud_raw))),
            (name, "log-normal stiffness field", n_held, rate(test, norm.normalize_y(logn.y)))]


def ppc_rows(n: int) -> list[tuple[str, str, int, float]]:
    prob = make_problem(n=8, noise_level=0.1)
    g = torch.Generator().manual_seed(3)
    x = prob.prior.sample(n, generator=g)
    clean = prob.forward_model(x)
    y = prob.noise_model(clean, generator=g)
    res = posterior_predictive_check(y, prob.posterior.sample(y, 16, generator=g),
                                     prob.forward_model, prob.noise_model, generator=g)
    loud = clean + 10 * (y - clean)
    res10 = posterior_predictive_check(loud, prob.posterior.sample(loud, 16, generator=g),
                                       prob.forward_model, prob.noise_model, generator=g)
    ks = stats.kstest(res.pvalue.numpy(), "uniform").pvalue
    return [("reference 8x8, exact posterior", "KS p-value of the sampled p-values", n, ks),
            ("reference 8x8, exact posterior", "p <= 0.01 (false alarm)", n,
             float((res.pvalue <= 0.01).double().mean())),
            ("reference 8x8, exact posterior", "10x noise: p <= 0.01", n,
             float((res10.pvalue <= 0.01).double().mean()))]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--held", type=int, default=500, help="held-out measurements per row")
    args = p.parse_args(argv)
    with torch_threads(1):
        rows = (reference_rows(4000, args.held) + elasticity_rows(16, 4000, args.held)
                + elasticity_rows(32, 2000, args.held // 2) + ppc_rows(args.held))
    print("torch threads 1; alpha = 0.01 (two-sided typicality test)\n")
    print("| problem | measurements | n | flagged (or value) |\n|---|---|---|---|")
    for problem, what, n, value in rows:
        print(f"| {problem} | {what} | {n} | {value:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
