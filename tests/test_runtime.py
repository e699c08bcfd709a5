"""torch_threads caps torch's intra-op threads and the native BLAS pools, and restores both."""

from __future__ import annotations

import numpy as np
import torch
from threadpoolctl import threadpool_info, threadpool_limits

from invdiff.runtime import torch_threads


def blas_threads() -> list[int]:
    return [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]


def test_torch_threads_caps_torch_and_blas_and_restores():
    np.linalg.solve(np.eye(3), np.ones(3))  # numpy's BLAS is loaded
    with threadpool_limits(limits=2, user_api="blas"), torch_threads(2):
        before_blas, before_torch = blas_threads(), torch.get_num_threads()
        assert before_blas and all(n == 2 for n in before_blas)  # a pool to cap
        with torch_threads(1):
            assert torch.get_num_threads() == 1
            assert all(n == 1 for n in blas_threads())
        assert blas_threads() == before_blas and torch.get_num_threads() == before_torch


def test_torch_threads_none_changes_nothing():
    before_blas, before_torch = blas_threads(), torch.get_num_threads()
    with torch_threads(None):
        assert blas_threads() == before_blas and torch.get_num_threads() == before_torch
