"""Simulation throughput (pairs per second), 1 vs 2 worker processes, measured side by side.

Problems: the reference problem (a cheap linear forward model: workers only add overhead)
and the elasticity FEM at N = 32 (a few ms per solve: workers pay off).

Run: ``.venv/bin/pytest benchmarks/bench_simulate.py --benchmark-only`` (part of ``make bench``);
pairs/s = pairs / mean time (``extra_info``). Results: docs/results/simulate.md.
"""

from __future__ import annotations

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


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("problem", sorted(PROBLEMS))
def test_simulate_throughput(benchmark, problem, workers):
    if problem.startswith("elasticity") and "elasticity-fem" not in invdiff.available(
            "forward_model"):
        pytest.skip("invdiff-elasticity is not installed")
    n_pairs, build = PROBLEMS[problem]
    components = build()
    benchmark.group = f"simulate {problem}"
    ds = benchmark.pedantic(
        invdiff.simulate, args=components,
        kwargs=dict(n=n_pairs, chunk_size=n_pairs // 8, workers=workers, progress=False),
        rounds=3, iterations=1, warmup_rounds=1,
    )
    assert len(ds) == n_pairs
    benchmark.extra_info["pairs_per_s"] = n_pairs / benchmark.stats.stats.mean
