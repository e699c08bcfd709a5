"""How few network calls does each trained model need with the ODE samplers?

For each trained run (a study run folder: ``RUNS/<problem>/noise-<L>/<run>``) and each ODE
sampler, sweep the number of steps, sample the held-out measurements of the run and measure
the std ratio and the mean error against the problem's reference posterior; report the
smallest nfe at which the std ratio is within 2% of the same model's at about 100 nfe.

    .venv/bin/python benchmarks/few_steps.py --preset cpu --runs RUNS --problem reference \\
        --nets unet unet+flow-matching

One thread; the held-out set and reference are the study's (``invdiff.study.runner``), the
sampling path is ``invdiff sample``'s (``sample_and_score``).
"""

from __future__ import annotations

import argparse
import sys

from invdiff.runtime import torch_threads
from invdiff.study import load_preset
from invdiff.study.runner import StudyRuns, held_out_set, problem_reference, run_cell
from invdiff.training.checkpoint import load_model

#: sampler -> steps swept (heun: 2 N network calls, dpm-2m: N + 1)
SWEEPS = {"heun": [3, 5, 8, 13, 25, 50], "dpm-2m": [4, 6, 9, 12, 24, 99]}


def sweep(preset, runs, problem: str, net: str) -> list[dict]:
    level = preset.problems[problem].noise_levels[0]
    h = held_out_set(runs, problem, level)
    ref = problem_reference(runs, h)
    exp = runs.get(problem, level, net)
    model = load_model(exp.paths.final, ema=True)
    rows = []
    for sampler, steps in SWEEPS.items():
        for n in steps:
            p = preset.model_copy(update={"samplers": {sampler: {"steps": n}}})
            m = run_cell(p, model, sampler, h, ref).metrics
            rows.append({"net": net, "sampler": sampler, "steps": n, "nfe": m["nfe"],
                         "std_ratio": m["std_ratio"], "mean_err_std": m.get("mean_err_std"),
                         "std_corr": m["std_corr"]})
            print(f"{net} {sampler} steps {n} nfe {m['nfe']}: std ratio {m['std_ratio']:.3f},"
                  f" mean err {m.get('mean_err_std', float('nan')):.3f}", flush=True)
    return rows


def fewest(rows: list[dict]) -> list[dict]:
    """Per (net, sampler): the smallest nfe within 2% of the std ratio at the nfe nearest
    100."""
    out = []
    for key in sorted({(r["net"], r["sampler"]) for r in rows}):
        rs = sorted((r for r in rows if (r["net"], r["sampler"]) == key), key=lambda r: r["nfe"])
        top = min(rs, key=lambda r: abs(r["nfe"] - 100))
        ok = [r for r in rs if abs(r["std_ratio"] / top["std_ratio"] - 1) <= 0.02]
        out.append({"net": key[0], "sampler": key[1], "nfe_at_100": top["nfe"],
                    "std_ratio_at_100": top["std_ratio"], "fewest_nfe": ok[0]["nfe"],
                    "std_ratio_there": ok[0]["std_ratio"],
                    "mean_err_there": ok[0]["mean_err_std"]})
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--runs", required=True, help="the study's runs folder (trained models)")
    ap.add_argument("--problem", default="reference")
    ap.add_argument("--nets", nargs="+", default=["unet"], help="runs: NET or NET+OBJECTIVE")
    ap.add_argument("--set", action="append", default=[], help="preset override")
    args = ap.parse_args(argv)
    preset = load_preset(args.preset, args.set).model_copy(update={"runs": args.runs})
    runs = StudyRuns(preset, progress=False)
    with torch_threads(1):
        rows = [r for net in args.nets for r in sweep(preset, runs, args.problem, net)]
    print("\n| run | sampler | steps | nfe | std ratio | mean err (ref std) | std corr |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['net']} | {r['sampler']} | {r['steps']} | {r['nfe']} | "
              f"{r['std_ratio']:.3f} | {r['mean_err_std']:.3f} | {r['std_corr']:.3f} |")
    print("\n| run | sampler | std ratio at ~100 nfe | fewest nfe within 2% | std ratio there "
          "| mean err there |\n|---|---|---|---|---|---|")
    for r in fewest(rows):
        print(f"| {r['net']} | {r['sampler']} | {r['std_ratio_at_100']:.3f} "
              f"({r['nfe_at_100']} nfe) | {r['fewest_nfe']} | {r['std_ratio_there']:.3f} | "
              f"{r['mean_err_there']:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
