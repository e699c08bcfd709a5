"""Root pytest configuration: applies to the core's and every plugin's tests."""

from __future__ import annotations

import pytest

from invdiff.runtime import torch_threads


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Every test runs on one torch thread: the tests use small tensors, for which intra-op
    threads only add synchronisation (10x and more slower on a loaded 2-core machine)."""
    with torch_threads(1):
        yield
