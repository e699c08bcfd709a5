"""What a perfect sampler scores: exact posterior samples through the study's own metrics.

On the linear-Gaussian reference problem the posterior is known in closed form, so its exact
samples can be scored exactly as a trained model's are (same held-out measurements, same number
of samples, same :func:`invdiff.evaluation.metrics.sample_metrics`). The result is the best any
sampler can measure with that many samples: the std-field correlation of an exact sampler is below 1
because each pixel's std is estimated from n samples (relative noise about 1 / sqrt(2 (n - 1))),
and the std ratio and coverage scatter around 1 and the nominal level. A learned posterior is
judged against these numbers, not against 1. The table also prints the closed-form
expectations of :func:`invdiff.evaluation.metrics.exact_sampler_scores` beside the measured ones.

Prints a table over n (samples per measurement), the mean and spread over ``--repeats`` draws;
``--out FILE`` also writes them as a result file (JSON, with the command, threads and machine),
and ``--out docs/results/data/exact-sampler-floor.json`` updates docs/results/samplers.md
(``benchmarks/results_pages.py``):

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/exact_sampler_floor.py --n-test 8 \\
        --n-samples 32 64 256 1024 [--out docs/results/data/exact-sampler-floor.json]

It reads the held-out set of the preset's ``reference`` problem under ``<runs>`` (simulated by
``invdiff study`` or ``benchmarks/learning_curves.py`` with the same preset) and simulates it
first when it is missing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

from invdiff.evaluation.metrics import exact_sampler_scores, sample_metrics
from invdiff.experiment import run as pipeline
from invdiff.interfaces import ReferenceResult
from invdiff.reference.exact import exact_posterior
from invdiff.study.preset import load_preset
from invdiff.study.runner import held_out_set

sys.path.insert(0, str(Path(__file__).resolve().parent))
import results_pages  # noqa: E402  (benchmarks/results_pages.py: the result file and its page)

METRICS = ("std_ratio", "std_corr", "coverage_90", "mean_err_std")


def exact_scores(post, h, n: int, seed: int) -> dict[str, float]:
    """Metrics of ``n`` exact samples per held-out measurement against the exact posterior."""
    y = h.y.double()
    samples = post.sample(y, n, torch.Generator().manual_seed(seed)).float()
    mean = post.mean(y).float()
    ref = ReferenceResult(index=list(range(len(y))), mean=mean,
                          std=post.std.float().expand_as(mean), samples=None, seconds=0.0)
    return sample_metrics(samples, h.x.float(), ref)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--problem", default="reference", help="a linear-Gaussian problem")
    ap.add_argument("--n-test", type=int, default=8, help="first N held-out measurements")
    ap.add_argument("--n-samples", type=int, nargs="+", default=[32, 64, 256, 1024])
    ap.add_argument("--repeats", type=int, default=20, help="independent draws per n")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--out", type=Path, help="also write the table as this result file (JSON)")
    args = ap.parse_args(argv)

    preset = load_preset(args.preset, args.set)
    level = preset.problems[args.problem].noise_levels[0]
    pipeline.run_simulate(preset.experiment(args.problem, level), progress=False)
    h = held_out_set(preset, args.problem, level)
    h.x, h.y = h.x[: args.n_test], h.y[: args.n_test]
    post = exact_posterior(*h.components)

    print(f"exact posterior samples of `{args.problem}` (preset {preset.name}), first "
          f"{len(h.y)} held-out measurements, mean ± std over {args.repeats} draws\n")
    print("| samples | " + " | ".join(METRICS) + " | predicted std_ratio | predicted std_corr |")
    print("| --- |" + " --- |" * (len(METRICS) + 2))
    rows = []
    for n in args.n_samples:
        runs = [exact_scores(post, h, n, seed) for seed in range(args.repeats)]
        spread = {m: [statistics.mean(r[m] for r in runs), statistics.stdev(r[m] for r in runs)]
                  for m in METRICS}
        best = exact_sampler_scores(post.std, n)
        rows.append({"samples": n, **spread, "predicted_std_ratio": best["std_ratio"],
                     "predicted_std_corr": best["std_corr"]})
        print(f"| {n} | " + " | ".join(f"{a:.3f} ± {b:.3f}" for a, b in spread.values())
              + f" | {best['std_ratio']:.3f} | {best['std_corr']:.3f} |")
    if args.out:
        results_pages.save_run(args.out, results_pages.new_run(
            results_pages.thread_settings(), results_pages.machine("torch"),
            preset=preset.name, problem=args.problem, n_test=len(h.y), repeats=args.repeats,
            rows=rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
