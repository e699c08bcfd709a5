"""Simulation throughput (pairs per second), 1 vs 2 worker processes, measured side by side.

Problems: the reference problem (a cheap linear forward model: workers only add overhead)
and the elasticity FEM at N = 32 (a few ms per solve: workers pay off).

Two ways to run it:

* ``.venv/bin/pytest benchmarks/bench_simulate.py --benchmark-only`` (part of ``make bench``);
  pairs/s = pairs / mean time (``extra_info``).
* ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_simulate.py [--rounds 3] [--out FILE
  [--append]]``: one warm-up call, then ``--rounds`` rounds in which each worker count runs in
  turn (so that a change of load hits them alike); prints the mean times, and with ``--out``
  writes them as a result file (JSON, with the command, threads and machine; ``--append``
  adds the run to those already there). ``--out docs/results/data/simulate.json`` also writes
  docs/results/simulate.md (``benchmarks/results_pages.py``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pytest

import invdiff

PROBLEMS = {
    "reference-32": (4096, lambda: (
        invdiff.create("prior", "gaussian-field", n=32),
        invdiff.create("forward_model", "blur", n=32, mask_fraction=0.5),
        invdiff.create("noise_model", "gaussian", std=0.05))),
    "elasticity-32": (512, lambda: (
        invdiff.create("prior", "circular-inclusion", n=32),
        invdiff.create("forward_model", "elasticity-fem", grid=32),
        invdiff.create("noise_model", "gaussian", level=0.05))),
}
WORKERS = (1, 2)


def _simulate(components: tuple, n_pairs: int, workers: int):
    return invdiff.simulate(*components, n=n_pairs, chunk_size=n_pairs // 8, workers=workers,
                            progress=False)


@pytest.mark.parametrize("workers", WORKERS)
@pytest.mark.parametrize("problem", sorted(PROBLEMS))
def test_simulate_throughput(benchmark, problem, workers):
    if problem.startswith("elasticity") and "elasticity-fem" not in invdiff.available(
            "forward_model"):
        pytest.skip("invdiff-elasticity is not installed")
    n_pairs, build = PROBLEMS[problem]
    benchmark.group = f"simulate {problem}"
    ds = benchmark.pedantic(_simulate, args=(build(), n_pairs, workers), rounds=3, iterations=1,
                            warmup_rounds=1)
    assert len(ds) == n_pairs
    if benchmark.stats is not None:  # None under --benchmark-disable (one plain call)
        benchmark.extra_info["pairs_per_s"] = n_pairs / benchmark.stats.stats.mean


def measure(problems: list[str], rounds: int) -> list[dict]:
    """Mean seconds per ``invdiff.simulate`` call of each problem and worker count, the worker
    counts timed in turn within each round after one warm-up call each."""
    rows = []
    for problem in problems:
        n_pairs, build = PROBLEMS[problem]
        components = build()
        times = {w: [] for w in WORKERS}
        for r in range(rounds + 1):
            for w in WORKERS:
                t0 = time.perf_counter()
                assert len(_simulate(components, n_pairs, w)) == n_pairs
                if r:
                    times[w].append(time.perf_counter() - t0)
        for w in WORKERS:
            mean = sum(times[w]) / rounds
            rows.append({"problem": problem, "pairs": n_pairs, "workers": w,
                         "mean_seconds": mean, "pairs_per_s": n_pairs / mean})
            print(f"{problem}: {n_pairs} pairs, {w} worker(s): {mean:.3f} s "
                  f"({n_pairs / mean:.0f} pairs/s)", flush=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", nargs="+", choices=sorted(PROBLEMS),
                    default=["elasticity-32", "reference-32"])
    ap.add_argument("--rounds", type=int, default=3, help="timed rounds after the warm-up")
    ap.add_argument("--out", type=Path, help="also write the times as this result file (JSON)")
    ap.add_argument("--append", action="store_true",
                    help="add this run to the runs already in the result file")
    ap.add_argument("--title", default="", help="the run's heading on the page")
    args = ap.parse_args(argv)
    rows = measure(args.problems, args.rounds)
    if args.out:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import results_pages

        results_pages.save_run(args.out, results_pages.new_run(
            results_pages.thread_settings("each worker process on one thread (the workers "
                                          "limit their BLAS threads)"),
            results_pages.machine("torch", "numpy", "scipy"),
            title=args.title or f"Run of {time.strftime('%Y-%m-%d')}", rounds=args.rounds,
            rows=rows), append=args.append)


if __name__ == "__main__":
    main()
