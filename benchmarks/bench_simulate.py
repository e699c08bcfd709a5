"""Simulation throughput (pairs per second) on the reference problem, 1 vs 2 workers.

Run: ``.venv/bin/pytest benchmarks/bench_simulate.py --benchmark-only`` (or ``make bench``).
pytest-benchmark prints the table; pairs/s = n / mean time. Results: docs/results/simulate.md.
"""

from __future__ import annotations

import pytest

import invdiff
from invdiff.reference import make_problem

N_PAIRS = 4096


@pytest.fixture(scope="module")
def problem():
    return make_problem(n=32, mask_fraction=0.5)


@pytest.mark.parametrize("workers", [1, 2])
def test_simulate_throughput(benchmark, problem, workers):
    benchmark.group = "simulate reference n=32"
    benchmark.extra_info["pairs"] = N_PAIRS
    ds = benchmark.pedantic(
        invdiff.simulate,
        args=(problem.prior, problem.forward_model, problem.noise_model),
        kwargs=dict(n=N_PAIRS, chunk_size=512, workers=workers, progress=False),
        rounds=3, iterations=1, warmup_rounds=1,
    )
    assert len(ds) == N_PAIRS
    benchmark.extra_info["pairs_per_s"] = N_PAIRS / benchmark.stats.stats.mean
