"""Run this plugin's tests with one torch thread: they use small tensors, for which intra-op
threads only add synchronisation (dozens of times slower on a loaded 2-core machine)."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_torch_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
