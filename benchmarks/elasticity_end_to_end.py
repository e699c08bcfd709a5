"""Elastography end to end: cSDM posteriors (both samplers) against the MCMC reference.

Simulates, trains (resuming) and samples the config's experiment with the core pipeline, then
for the first ``--n-ref`` held-out measurements runs the MCMC reference posterior over the
circular inclusion's parameters (centre, radius, contrast; the paper's "MCS" reference) and
compares posterior mean and std fields:

* ``rmse_truth``: RMSE of the posterior mean against the true field, for each method;
* ``rmse_vs_mcmc``: RMSE between the cSDM and the MCMC posterior means;
* ``std_ratio``: mean cSDM std / mean MCMC std; ``std_corr``: correlation of the std fields;
* ``coverage_90``: fraction of true pixels inside the central 90% interval.

Run::

    .venv/bin/python benchmarks/elasticity_end_to_end.py configs/elasticity-circle.toml \
        --write docs/results/elasticity.md --figures docs/results/elasticity
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

from invdiff import pipeline
from invdiff.checkpoint import load_model
from invdiff.config import load_config
from invdiff.data import load_dataset
from invdiff.figures import posterior_figure
from invdiff.io import cached_arrays, content_key
from invdiff.metrics import coverage, rms
from invdiff.posterior import sample_posterior
from invdiff.runtime import torch_threads

SAMPLERS = ("annealed-langevin", "predictor-corrector")


def mcmc_reference(cfg, test, m: int, n_steps: int, n_walkers: int) -> dict:
    """MCMC posterior mean/std fields for held-out pair ``m`` (known noise std, as simulated).

    Cached in ``<output.dir>/references/`` under a digest of the measurement, the chain's size
    and the problem, so a rerun (e.g. after retraining the net) does not repeat the chain."""
    from invdiff_elasticity.mcmc import reference_posterior, relative_noise_std

    prior, fem, _ = pipeline.build_problem(cfg)
    level = cfg.problem.noise_model.params["level"]
    noise_std = relative_noise_std(test.y_clean[m], level)
    key = content_key(test.y[m], cfg.problem.model_dump(mode="json"))
    path = cfg.out_dir / "references" / f"mcmc-{m}-{n_steps}x{n_walkers}-{key}.npz"

    def compute() -> dict[str, np.ndarray]:
        return reference_posterior(test.y[m], noise_std, prior, fem, n_steps=n_steps,
                                   n_walkers=n_walkers, seed=m).summary_arrays()

    arrays = cached_arrays(path, compute)
    return {"mean": torch.from_numpy(arrays["mean"])[None],
            "std": torch.from_numpy(arrays["std"])[None],
            "rhat_max": float(arrays["rhat_max"]), "ess_min": float(arrays["ess_min"]),
            "seconds": float(arrays["seconds"]), "solves": int(arrays["solves"])}


def run(config: str, n_ref: int, n_samples: int, mcmc_steps: int, walkers: int,
        figures: Path | None, threads: int | None, steps: int | None = None) -> list[dict]:
    cfg = load_config(config)
    if steps is not None:  # training resumes from the config's run (bit-identical), so a
        cfg.training.steps = steps  # longer budget continues the shorter one
    with torch_threads(threads):
        pipeline.run_simulate(cfg, progress=False)
        summary = pipeline.run_train(cfg, progress=False)
        paths = pipeline.output_paths(cfg)
        model = load_model(paths["final"])
        test = load_dataset(paths["test"])
        y = test.y[:n_ref]
        posts = {}
        for name in SAMPLERS:
            gen = torch.Generator().manual_seed(cfg.sampling.seed)
            posts[name] = sample_posterior(model, y, sampler=name, n=n_samples, generator=gen,
                                           progress=False)
        rows = []
        for m in range(n_ref):
            ref = mcmc_reference(cfg, test, m, mcmc_steps, walkers)
            truth = test.x[m]
            rows.append({"sampler": "MCMC reference", "m": m,
                         "rmse_truth": rms(ref["mean"] - truth), "rmse_vs_mcmc": 0.0,
                         "std_ratio": 1.0, "std_corr": 1.0, "coverage_90": None,
                         "nfe_or_solves": ref["solves"], "seconds": ref["seconds"],
                         "rhat_max": ref["rhat_max"], "ess_min": ref["ess_min"]})
            for name, post in posts.items():
                s = post.samples[m]
                mean, std = s.mean(0), s.std(0)
                rows.append({
                    "sampler": name, "m": m, "rmse_truth": rms(mean - truth),
                    "rmse_vs_mcmc": rms(mean - ref["mean"]),
                    "std_ratio": float(std.mean() / ref["std"].mean()),
                    "std_corr": float(torch.corrcoef(torch.stack(
                        [std.flatten(), ref["std"].flatten()]))[0, 1]),
                    "coverage_90": coverage(s[None], truth[None], 0.9),
                    "nfe_or_solves": post.nfe, "seconds": post.seconds / n_ref,
                    "rhat_max": None, "ess_min": None})
                if figures is not None:
                    posterior_figure(figures / f"{name}_{m}.png", truth, test.y[m], s,
                                     ref["mean"], ref["std"],
                                     title=f"{cfg.name}: held-out {m}, {name} vs MCMC")
            print(json.dumps(rows[-3:], default=str), flush=True)
    rows.append({"sampler": "training", "m": None, "seconds": summary["seconds"],
                 "nfe_or_solves": summary["steps"]})
    return rows


def to_markdown(rows: list[dict]) -> str:
    cols = ("sampler", "m", "rmse_truth", "rmse_vs_mcmc", "std_ratio", "std_corr",
            "coverage_90", "nfe_or_solves", "seconds", "rhat_max", "ess_min")

    def fmt(v):
        return "" if v is None else f"{v:.3g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(cols) + " |", "|" + " --- |" * len(cols)]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in cols) + " |"
              for r in rows if r["sampler"] != "training"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("config")
    p.add_argument("--n-ref", type=int, default=3)
    p.add_argument("--n-samples", type=int, default=64)
    p.add_argument("--mcmc-steps", type=int, default=2000)
    p.add_argument("--walkers", type=int, default=32)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--steps", type=int, default=None, help="override training.steps")
    p.add_argument("--figures", type=Path)
    p.add_argument("--write")
    args = p.parse_args(argv)
    start = time.time()
    rows = run(args.config, args.n_ref, args.n_samples, args.mcmc_steps, args.walkers,
               args.figures, args.threads, args.steps)
    table = to_markdown(rows)
    train = next(r for r in rows if r["sampler"] == "training")
    print(table)
    if args.write:
        cmd = "python benchmarks/elasticity_end_to_end.py " + " ".join(
            shlex.quote(a) for a in (argv or sys.argv[1:]))
        with open(args.write, "a") as fh:
            fh.write(f"\n`{cmd}`  \ntraining: {train['nfe_or_solves']} steps in "
                     f"{(train['seconds'] or 0) / 60:.1f} min; total wall time "
                     f"{(time.time() - start) / 60:.1f} min\n\n{table}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
