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

from invdiff.evaluation.figures import posterior_figure
from invdiff.evaluation.metrics import posterior_metrics, rms
from invdiff.evaluation.references import reference_on
from invdiff.evaluation.score import sample_and_score
from invdiff.experiment.config import ComponentSpec, load_config
from invdiff.experiment.run import Experiment
from invdiff.runtime import torch_threads

SAMPLERS = ("annealed-langevin", "predictor-corrector")


def run(config: str, n_ref: int, n_samples: int, mcmc_steps: int, walkers: int,
        figures: Path | None, threads: int | None, steps: int | None = None) -> list[dict]:
    cfg = load_config(config)
    if steps is not None:  # training resumes from the config's run (bit-identical), so a
        cfg.training.steps = steps  # longer budget continues the shorter one
    exp = Experiment(cfg, progress=False)
    with torch_threads(threads):
        exp.simulate()
        summary = exp.train()
        model = exp.model()
        test = exp.dataset("test")
        y = test.y[:n_ref]
        # the same sampling as `invdiff sample` (chains of measurement m seeded by (seed, m))
        posts = {name: sample_and_score(model, y, seed=cfg.sampling.seed, sampler=name,
                                        n=n_samples, progress=False).posterior
                 for name in SAMPLERS}
        # the registered reference (cached chains in <output.dir>/references), seed m for pair m
        spec = ComponentSpec(name="inclusion-mcmc", params={
            "n_ref": n_ref, "n_steps": mcmc_steps, "n_walkers": walkers})
        ref = reference_on(spec, exp.components, test.y, test.y_clean,
                           cache=exp.paths.references)
        rows = []
        for m in range(n_ref):
            truth, ref_mean, ref_std = test.x[m], ref.mean[m], ref.std[m]
            rows.append({"sampler": "MCMC reference", "m": m,
                         "rmse_truth": rms(ref_mean - truth), "rmse_vs_mcmc": 0.0,
                         "std_ratio": 1.0, "std_corr": 1.0, "coverage_90": None,
                         "nfe_or_solves": ref.info["solves"], "seconds": ref.seconds,
                         "rhat_max": ref.info["rhat_max"], "ess_min": ref.info["ess_min"]})
            for name, post in posts.items():
                s = post.samples[m]
                met = posterior_metrics(s[None], truth[None], ref_mean[None], ref_std[None])
                rows.append({
                    "sampler": name, "m": m, "rmse_truth": met["rmse_truth"],
                    "rmse_vs_mcmc": met["rmse_ref"], "std_ratio": met["std_ratio"],
                    "std_corr": met["std_corr"], "coverage_90": met["coverage_90"],
                    "nfe_or_solves": post.nfe, "seconds": post.seconds / n_ref,
                    "rhat_max": None, "ess_min": None})
                if figures is not None:
                    posterior_figure(figures / f"{name}_{m}.png", truth, test.y[m], s,
                                     ref_mean, ref_std,
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
