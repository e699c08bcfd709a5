"""Runtime switches shared by tests, benchmarks and long jobs."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads (None: leave as is), then restore.

    Small tensors gain nothing from a second thread, and on a shared, loaded CPU the threads'
    barriers made small jobs 10-100x slower (measured in this project's tests and benchmarks).
    """
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
