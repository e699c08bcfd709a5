"""Run this plugin's tests on one torch thread (see invdiff_refinenet.testing.one_thread)."""

import pytest
from invdiff_refinenet.testing import one_thread


@pytest.fixture(autouse=True)
def _one_torch_thread():
    with one_thread():
        yield
