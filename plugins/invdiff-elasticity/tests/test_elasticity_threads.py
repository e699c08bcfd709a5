"""The banded solves run on one BLAS thread whatever the caller's limits (spinning BLAS
threads made each solve several times slower on a loaded machine), and the caller's limits
come back afterwards."""

from __future__ import annotations

import pytest
import torch
from invdiff_elasticity import ElasticityFEM, solvers
from threadpoolctl import threadpool_info, threadpool_limits


def blas_threads() -> set[int]:
    return {lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"}


def test_solves_use_one_blas_thread(monkeypatch):
    if not blas_threads():
        pytest.skip("no BLAS library visible to threadpoolctl")
    seen = []
    real = solvers.lapack.dpbsv

    def spy(*args, **kwargs):
        seen.append(blas_threads())
        return real(*args, **kwargs)

    monkeypatch.setattr(solvers.lapack, "dpbsv", spy)
    fem = ElasticityFEM(grid=4)
    with threadpool_limits(limits=2, user_api="blas"):
        u = fem.displacement(torch.ones(2, 4, 4, dtype=torch.float64))
        assert blas_threads() == {2}  # restored
    assert seen == [{1}, {1}]
    assert torch.isfinite(u).all()
