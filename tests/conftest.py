"""Shared fixtures of the core tests."""

from __future__ import annotations

import pytest
import torch

from invdiff import plugins


@pytest.fixture
def fresh_registry(monkeypatch):
    """A registry reloaded for this test and forgotten afterwards, so plugins a test adds or
    environment variables it sets never leak into other tests."""
    plugins.reset_registry()
    yield
    plugins.reset_registry()


@pytest.fixture
def gen():
    """A factory of seeded CPU generators."""
    return lambda seed=0: torch.Generator().manual_seed(seed)
