"""Accuracy per CPU minute: a score net trained on the reference problem, compared with the
exact posterior at growing training budgets.

For each step count in ``--steps`` the experiment's training resumes from where the previous
budget stopped (checkpoints make the trajectory identical to one long run), then the posterior
of the held-out measurements is sampled and compared with the closed form:

* ``mean_err_std``: RMS over pixels and measurements of (mean - exact mean) / exact std;
* ``std_ratio``: mean posterior std / mean exact std;
* ``coverage_90``: fraction of true pixels inside the central 90% interval.

Run (one net per command; both configs live in ``configs/``)::

    .venv/bin/python benchmarks/reference_accuracy.py configs/reference-unet.toml \
        --steps 1000 2000 4000 --write docs/results/reference-accuracy.md

Rows are appended to the markdown table (with the command), so several nets share one file.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import time
from pathlib import Path

import torch

from invdiff.experiment import run as pipeline
from invdiff.experiment.config import load_config

COLUMNS = ("net", "params", "steps", "train_min", "sample_s", "nfe", "mean_err_std",
           "std_ratio", "std_corr", "coverage_90", "rmse_truth", "ref_rmse_truth")


def study(config: str, steps: list[int], threads: int | None = None,
          progress: bool = False) -> list[dict]:
    """Train to each budget in ``steps`` (resuming) and evaluate; one row per budget."""
    if threads:
        torch.set_num_threads(threads)
    cfg = load_config(config)
    pipeline.run_simulate(cfg, progress=progress)
    rows = []
    for k in steps:
        cfg.training.steps = k
        summary = pipeline.run_train(cfg, progress=progress)
        metrics = pipeline.run_sample(cfg, progress=progress)
        rows.append({
            "net": cfg.net.name, "params": summary["parameters"], "steps": k,
            "train_min": (summary["seconds"] or 0.0) / 60, "sample_s": metrics["seconds"],
            **{c: metrics.get(c) for c in COLUMNS[5:]},
        })
        print(json.dumps(rows[-1]), flush=True)
    return rows


def to_markdown(rows: list[dict]) -> str:
    def fmt(v):
        return f"{v:.3g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + " --- |" * len(COLUMNS)]
    lines += ["| " + " | ".join(fmt(r[c]) for c in COLUMNS) + " |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("config")
    p.add_argument("--steps", type=int, nargs="+", required=True)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--write", help="append the table to this markdown file")
    p.add_argument("--progress", action="store_true")
    args = p.parse_args(argv)
    start = time.time()
    rows = study(args.config, args.steps, args.threads, args.progress)
    table = to_markdown(rows)
    print(table)
    if args.write:
        cmd = "python " + " ".join(shlex.quote(a) for a in ["benchmarks/reference_accuracy.py",
                                                             *(argv or sys.argv[1:])])
        with open(args.write, "a") as fh:
            fh.write(f"\n### {Path(args.config).stem}\n\n`{cmd}`  \n"
                     f"{platform.processor() or platform.machine()}, torch "
                     f"{torch.__version__}, {torch.get_num_threads()} threads, "
                     f"total wall time {(time.time() - start) / 60:.1f} min\n\n{table}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
