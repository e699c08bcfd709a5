"""Root pytest configuration: applies to the core's and every plugin's tests."""

from __future__ import annotations

import pytest
import torch

from invdiff.runtime import torch_threads


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Every test runs on one torch thread: the tests use small tensors, for which intra-op
    threads only add synchronisation (10x and more slower on a loaded 2-core machine)."""
    with torch_threads(1):
        yield


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device here"))])
def torch_device(request) -> torch.device:
    """Each device a test should pass on: the CPU always, CUDA where a GPU is present (test ids
    end in ``[cuda]``: ``pytest -k cuda`` runs only those on a GPU machine)."""
    return torch.device(request.param)
